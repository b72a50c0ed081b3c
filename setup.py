import re

from setuptools import find_packages, setup

with open("imgurd/__init__.py", encoding="utf-8") as handle:
    version = re.search(r'__version__ = "([^"]+)"', handle.read()).group(1)

setup(
    name="imgurd",
    version=version,
    description="Re-upload images from their URLs to Imgur, in the background, over a small REST API",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["imgurd", "imgurd.*"]),
    python_requires=">=3.9",
    install_requires=[
        "tornado>=6.6",  # resets curl handles between requests (downloads and uploads share them)
        "pycurl>=7.45.7",  # CURLOPT_PREREQFUNCTION: the guard vets reused connections too
        "click>=8.0",
        "prometheus_client>=0.16",
        "idna>=3.4",  # IDNA 2008 / UTS 46 host names, as browsers and curl use (the stdlib codec is IDNA 2003)
        "urllib3>=2",  # imgurd-submit's HTTP client
        "Pillow>=11.3",  # the first whose wheels read AVIF (they bundle libwebp, libavif, libjpeg, zlib)
        "pillow-heif>=1.0",  # HEIC through libheif (wheels bundle it)
    ],
    extras_require={
        "test": [
            "pytest>=8.4",  # --disable-plugin-autoload (pytest.ini)
            "pytest-tornado>=0.8",
            "hypothesis>=6",  # property tests (tests/test_units.py)
            "ruff>=0.5",  # lint, run by .ci/run (ruff.toml)
            "pytest-xdist>=3",  # the suite mostly waits on loopback servers: 4 workers even on 2 cores
            "setuptools<81",  # pytest-tornado imports pkg_resources
            "schemathesis>=4",  # fuzzes the API from its OpenAPI document
            "openapi-spec-validator>=0.7",
        ],
        # python -m bench (bench/README.md); wrk, if installed (apt-get install wrk), drives the POST test
        "bench": ["psutil>=5.9", "py-spy>=0.3"],
    },
    entry_points={
        "console_scripts": [
            "imgurd=imgurd.cli:run_command",
            "imgurd-submit=imgurd.submit:main",
        ],
    },
)
