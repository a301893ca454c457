#!/usr/bin/env bash
# Install the Debian packages of the services the tests start (XRootD server, Slurm, munge, Chromium).
# Only as root and only when missing; otherwise the service tests skip with a reason
# (and fail under CI, see .ci/run).
set -u
need=()
command -v xrootd    >/dev/null 2>&1 || need+=(xrootd-server)
command -v xrdcp     >/dev/null 2>&1 || need+=(xrootd-client)
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd    >/dev/null 2>&1 || need+=(slurmd)
command -v sbatch    >/dev/null 2>&1 || need+=(slurm-client)
command -v munged    >/dev/null 2>&1 || need+=(munge)
# headless Chromium for the report.html browser test (tests/test_report_page.py)
command -v chromium  >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "services: not root, cannot install ${need[*]}; service tests will skip" >&2
  exit 0
fi
echo "services: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null \
  || echo "services: apt-get install failed; service tests will skip" >&2
exit 0
