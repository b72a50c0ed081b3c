# imgurd container image.
#
#   docker build -t imgurd .
#   docker run -d --name imgurd -p 8080:8080 --stop-timeout 40 \
#       -e IMGURD_CLIENT_ID=YOUR_IMGUR_CLIENT_ID imgurd
#
# Configuration comes from IMGURD_<KEY> environment variables (IMGURD_CLIENT_ID is
# required); pass secrets at run time (`--env-file`), never at build time.
# The container listens on 0.0.0.0: set IMGURD_API_TOKEN, or anyone who can reach the
# port can submit jobs and spend your Imgur upload quota (imgurd warns at start-up).
# Extra arguments are appended to the command line: `docker run imgurd --version`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what the package needs to build (see .dockerignore).
COPY setup.py README.md /tmp/imgurd-src/
COPY imgurd /tmp/imgurd-src/imgurd

# Wheels only, no compiler: tornado, click and prometheus_client are pure Python
# or ship wheels, pycurl ships manylinux wheels with libcurl and OpenSSL bundled.
# imgurd itself is pure Python and is built with setuptools (also a wheel).
RUN pip install --no-cache-dir --only-binary=:all: /tmp/imgurd-src \
 && rm -rf /tmp/imgurd-src \
 && imgurd --version \
 && groupadd --system --gid 10001 imgurd \
 && useradd --system --uid 10001 --gid imgurd --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin imgurd

USER 10001:10001

EXPOSE 8080

# No curl in the image: the standard library does the check. Proxies are bypassed
# on purpose; the port follows IMGURD_PORT when that is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('IMGURD_PORT', '8080'), timeout=4).read()"]

# imgurd drains transfers in flight for up to shutdown_timeout (30 s) on SIGTERM:
# give it that long with `docker stop -t 40` / `docker run --stop-timeout 40`.
STOPSIGNAL SIGTERM

ENTRYPOINT ["imgurd", "--host", "0.0.0.0"]
CMD []
