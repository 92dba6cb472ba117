#!/bin/sh
# The system tools the test suite runs, installed before anything else (the first step of `make test`).
#
# The tests check the shipped Prometheus rules, Alertmanager routes and compose file with the real
# tools (promtool, prometheus, amtool, docker-compose), open the worker's page in headless Chromium
# (chromium, chromedriver), and never skip when one is missing. As root
# with apt-get this installs what is missing from Debian's packages; otherwise it stops at once
# with the command to run. Uses only POSIX sh, `id` and `apt-get`.
set -eu

# command:Debian package — each package's extra apt-get options follow in `install`
TOOLS="promtool:prometheus prometheus:prometheus amtool:prometheus-alertmanager docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver"

missing=""
packages=""
for entry in $TOOLS; do
  tool=${entry%%:*}
  package=${entry#*:}
  if ! command -v "$tool" >/dev/null 2>&1; then
    missing="$missing $tool"
    case " $packages " in
      *" $package "*) ;;
      *) packages="$packages $package" ;;
    esac
  fi
done

if [ -z "$missing" ]; then
  exit 0
fi

hint="apt-get update && apt-get install -y --no-install-recommends$packages"
uid=$(id -u 2>/dev/null || echo unknown)
if [ "$uid" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make test: missing system tools:$missing" >&2
  echo "install them first (Debian or Ubuntu, as root), then run make test again:" >&2
  echo "  sudo sh -c '$hint'" >&2
  exit 1
fi

echo "make test: installing$packages (missing:$missing)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
for entry in $TOOLS; do
  tool=${entry%%:*}
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "make test: $tool is still missing after installing$packages" >&2
    exit 1
  fi
done
