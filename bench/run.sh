#!/usr/bin/env bash
# The benchmark suite of issue 9: xllm-tui, supervisord, PM2 and mprocs (installed by the suite into
# ${XLLM_BENCH_CACHE:-~/.cache/xllm-tui-bench}, outside the repository) and the floor, on the workloads of
# bench/README.md; writes bench/RESULTS.md. `bench/run.sh --help` for the options; `--quick` is a smoke test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$here/suite.py" "$@"
