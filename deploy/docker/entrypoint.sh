#!/usr/bin/env bash
# sllm_ray container entry point (the Dockerfile's ENTRYPOINT; README, *Containers*).
#
#   MODE=head   (default) ray start --head, then `sllm-ray serve $SERVE_CONFIG`, which
#               drains on SIGTERM (docker stop) and exits 0
#   MODE=worker waits for the head at $RAY_HEAD (host:port), bounded, then joins it
#   health      GET /ready on this node's Serve proxy: exit 0 when the app is ready
#   anything else: run as a command (e.g. `bash`, `sllm-ray status`)
#
# Before starting Ray it checks that /dev/shm holds the checkpoint store's DRAM tier
# (SLLM_RAY_STORE_DRAM_BYTES, the app's default 2 GiB) plus Ray's object store
# (RAY_OBJECT_STORE_BYTES, 512 MiB here): Docker gives a container 64 MiB of /dev/shm.
set -euo pipefail

MODE="${MODE:-head}"
SERVE_CONFIG="${SERVE_CONFIG:-configs/serve.yaml}"
RAY_PORT="${RAY_PORT:-6379}"
RAY_METRICS_PORT="${RAY_METRICS_PORT:-8080}"
RAY_OBJECT_STORE_BYTES="${RAY_OBJECT_STORE_BYTES:-536870912}"
RAY_HEAD_WAIT_TRIES="${RAY_HEAD_WAIT_TRIES:-60}"
RAY_HEAD_WAIT_S="${RAY_HEAD_WAIT_S:-2}"
HTTP_PORT="${SLLM_RAY_HTTP_PORT:-8000}"
DRAM_BYTES="${SLLM_RAY_STORE_DRAM_BYTES:-2147483648}"  # AppConfig.store_dram_bytes's default

die() {
    echo "entrypoint: $*" >&2
    exit 1
}

gib() { awk -v b="$1" 'BEGIN { printf "%.2f GiB", b / 1073741824 }'; }

check_shm() {
    local need have
    need=$((DRAM_BYTES + RAY_OBJECT_STORE_BYTES))
    have="$(df -B1 --output=size /dev/shm | tail -n 1 | tr -d ' ')"
    [[ "$have" =~ ^[0-9]+$ ]] || die "cannot read the size of /dev/shm (df said: $have)"
    if ((have < need)); then
        die "/dev/shm is $(gib "$have"); it must hold the DRAM tier (SLLM_RAY_STORE_DRAM_BYTES=$DRAM_BYTES, $(gib "$DRAM_BYTES")) plus Ray's object store (RAY_OBJECT_STORE_BYTES=$RAY_OBJECT_STORE_BYTES, $(gib "$RAY_OBJECT_STORE_BYTES")): $(gib "$need") at least. Start the container with --shm-size (compose: shm_size; Kubernetes: an emptyDir with medium Memory on /dev/shm), or lower SLLM_RAY_STORE_DRAM_BYTES."
    fi
}

ray_common=(--metrics-export-port="$RAY_METRICS_PORT" --object-store-memory="$RAY_OBJECT_STORE_BYTES" --disable-usage-stats)

case "${1:-$MODE}" in
    head)
        check_shm
        ray start --head --port="$RAY_PORT" --dashboard-host=0.0.0.0 "${ray_common[@]}"
        export RAY_ADDRESS="127.0.0.1:$RAY_PORT"
        exec sllm-ray serve "$SERVE_CONFIG"
        ;;
    worker)
        [[ -n "${RAY_HEAD:-}" ]] || die "MODE=worker needs RAY_HEAD (the head's host:port, e.g. head:6379)"
        check_shm
        tries=0
        until ray health-check --address "$RAY_HEAD" >/dev/null 2>&1; do
            tries=$((tries + 1))
            ((tries < RAY_HEAD_WAIT_TRIES)) || die "the Ray head at $RAY_HEAD did not answer after $tries tries, ${RAY_HEAD_WAIT_S} s apart"
            echo "entrypoint: waiting for the Ray head at $RAY_HEAD ($tries/$RAY_HEAD_WAIT_TRIES)" >&2
            sleep "$RAY_HEAD_WAIT_S"
        done
        exec ray start --address="$RAY_HEAD" --block "${ray_common[@]}"
        ;;
    health)
        exec python -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=5).status == 200 else 1)
except Exception as exc:
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)' "http://127.0.0.1:$HTTP_PORT/ready"
        ;;
    -*|"")
        die "unknown option ${1:-}; use MODE=head|worker, or the command health"
        ;;
    *)
        if [[ $# -eq 0 ]]; then die "unknown MODE=$MODE (head or worker)"; fi
        exec "$@"
        ;;
esac
