# imgurd container image.
#
#   docker build -t imgurd .
#   docker run -d --name imgurd -p 127.0.0.1:8080:8080 --stop-timeout 40 \
#       -e IMGURD_CLIENT_ID=YOUR_IMGUR_CLIENT_ID imgurd
#   docker run --rm -p 127.0.0.1:8080:8080 imgurd --dry-run     # no Imgur account needed
#
# Configuration comes from IMGURD_<KEY> environment variables (IMGURD_CLIENT_ID is
# required unless --dry-run); pass secrets at run time (`--env-file`, or secrets
# mounted as files with CREDENTIALS_DIRECTORY=/run/secrets), never at build time.
# The container listens on 0.0.0.0: set IMGURD_API_TOKEN, or anyone who can reach the
# port can submit jobs and spend your Imgur upload quota (imgurd warns at start-up).
# Extra arguments are appended to the command line: `docker run imgurd --version`.
#
# Jobs and links survive a restart only with a state file on a volume (opt-in; see
# docs/restarts.md):
#   docker run ... -v imgurd-state:/var/lib/imgurd \
#       -e IMGURD_STATE_FILE=/var/lib/imgurd/state.jsonl.gz imgurd
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what the package needs to build (see .dockerignore).
COPY setup.py README.md /tmp/imgurd-src/
COPY imgurd /tmp/imgurd-src/imgurd

# Wheels only, no compiler: tornado, click and prometheus_client are pure Python
# or ship wheels, pycurl ships manylinux wheels with libcurl and OpenSSL bundled,
# Pillow and pillow-heif (image conversion) with libwebp, libavif, libjpeg and libheif.
# imgurd itself is pure Python and is built with setuptools (also a wheel).
RUN pip install --no-cache-dir --only-binary=:all: /tmp/imgurd-src \
 && rm -rf /tmp/imgurd-src \
 && imgurd --version \
 && groupadd --system --gid 10001 imgurd \
 && useradd --system --uid 10001 --gid imgurd --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin imgurd \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/imgurd

USER 10001:10001

EXPOSE 8080
# Every interface of the container, set as a variable rather than a flag, so that `-e IMGURD_HOST=::`
# (or a --host flag) can still choose another. A config file's host does not beat it: the
# environment wins over the file.
ENV IMGURD_HOST=0.0.0.0

# The place for the state file, owned by the service user (a new named volume takes that over).
# Nothing is written there unless IMGURD_STATE_FILE is set: uncomment both lines to make it the
# image's default (then mount a volume, or the state goes when the container is removed).
# VOLUME ["/var/lib/imgurd"]
# ENV IMGURD_STATE_FILE=/var/lib/imgurd/state.jsonl.gz

# No curl in the image: the standard library does the check. Proxies are bypassed
# on purpose; the port follows IMGURD_PORT when that is set (an empty one is not set, as for imgurd).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % ((os.environ.get('IMGURD_PORT') or '').strip() or '8080'), timeout=4).read()"]

# imgurd drains transfers in flight for up to shutdown_timeout (30 s) on SIGTERM, then writes
# its state file if it has one: give it that long with `docker stop -t 40` / `--stop-timeout 40`.
STOPSIGNAL SIGTERM

ENTRYPOINT ["imgurd"]
CMD []
