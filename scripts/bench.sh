#!/usr/bin/env bash
# Benchmark keras2safetensors on a large synthetic Keras file.
#
#   scripts/bench.sh [SIZE_GB]        time convert / cat / Python / inspect / verify
#                                     (default 2.16 GB), write scripts/BENCH_RESULTS.md
#   scripts/bench.sh --large          5.4 GB file (20 Dense 8192x8192): run the
#                                     ignored test tests/large_file.rs on it
#   scripts/bench.sh --many           only the many-layers rows (below); prints
#                                     their table, writes no results file
#
# Many layers: a file of MANY_LAYERS (100000; "" for none) small Dense layers
# (8x8 kernel and bias; make_big_keras.py --small, about 320 MB, 200,000
# datasets, `layer_names` split into chunks as tf-keras splits it), on which
# `convert`, `inspect` and `convert --layout pytorch` run ROUNDS times: the cost
# per layer, not per byte.
#
# After the rounds, the scale curve: for each size in SCALE ("0.5 2 8" GB; "" for
# none) a file is generated (then deleted, unless it is the main input), and
# `cat` + sync, `convert` and `convert --layout pytorch` run SCALE_ROUNDS (3)
# times each, for wall time and peak RSS; a size is skipped, and said so, when
# the disk lacks room for it and its outputs.
#
# Environment: ROUNDS (3), INSPECT_REPS (20, per round), BENCH_DIR (/tmp/k2s-bench),
# PYTHON (python3; needs `pip install h5py numpy safetensors`), BENCH_LOCK
# (/tmp/bench.lock: present while timing runs are going), BENCH_RESULTS
# (scripts/BENCH_RESULTS.md), LARGE_DENSE (20), MANY_LAYERS (100000).
# Needs /usr/bin/time (GNU time). Outputs are removed after each run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
INSPECT_REPS=${INSPECT_REPS:-20}
BENCH_DIR=${BENCH_DIR:-/tmp/k2s-bench}
PYTHON=${PYTHON:-python3}
LOCK=${BENCH_LOCK:-/tmp/bench.lock}
RESULTS=${BENCH_RESULTS:-$REPO/scripts/BENCH_RESULTS.md}
LARGE_DENSE=${LARGE_DENSE:-20}
SCALE=${SCALE-0.5 2 8}
SCALE_ROUNDS=${SCALE_ROUNDS:-3}
MANY_LAYERS=${MANY_LAYERS-100000}
COMMAND_LINE="scripts/bench.sh $*"

LARGE=0
MANY_ONLY=0
SIZE_GB=2.16
while [ $# -gt 0 ]; do
    case "$1" in
        --large) LARGE=1 ;;
        --many) MANY_ONLY=1 ;;
        -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) SIZE_GB=$1 ;;
    esac
    shift
done

die() { echo "bench.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed"
"$PYTHON" -c 'import h5py, numpy' 2>/dev/null ||
    die "$PYTHON lacks h5py/numpy: pip install h5py numpy safetensors (or set PYTHON=...)"
mkdir -p "$BENCH_DIR"

# --- lock: present only while timing runs go, removed on any exit ---------
LOCK_HELD=0
take_lock() { touch "$LOCK"; LOCK_HELD=1; }
drop_lock() { if [ "$LOCK_HELD" = 1 ]; then rm -f "$LOCK"; LOCK_HELD=0; fi; }
OUTPUTS=()
cleanup() {
    drop_lock
    if [ ${#OUTPUTS[@]} -gt 0 ]; then rm -f "${OUTPUTS[@]}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Held from the start (build and generation included), so that other CPU-heavy
# work waiting for it does not start in the middle of the runs.
take_lock

# Free space in bytes on the benchmark folder's file system.
free_bytes() { df -Pk "$BENCH_DIR" | awk 'NR == 2 { printf "%.0f\n", $4 * 1024 }'; }
need_space() { # bytes needed
    local free
    free=$(free_bytes)
    if [ "$free" -lt "$1" ]; then
        die "$BENCH_DIR has $((free >> 20)) MiB free, needs $(($1 >> 20)) MiB"
    fi
}

# Generates $1 with make_big_keras.py args $2... unless it and its listing exist.
ensure_input() {
    local path=$1; shift
    if [ -f "$path" ] && [ -f "$path.json" ] &&
        "$PYTHON" -c 'import json, os, sys; sys.exit(json.load(open(sys.argv[1] + ".json"))["file_size"] != os.path.getsize(sys.argv[1]))' "$path"; then
        say "using $path ($(stat -c %s "$path") bytes)"
        return
    fi
    rm -f "$path" "$path.json"
    say "generating $path: make_big_keras.py $*"
    "$PYTHON" "$REPO/scripts/make_big_keras.py" "$path" "$@"
}

say "cargo build --release"
(cd "$REPO" && cargo build --release --quiet)
# A private copy, so that a rebuild by someone else during the runs changes nothing.
BIN="$BENCH_DIR/keras2safetensors"
cp "${CARGO_TARGET_DIR:-$REPO/target}/release/keras2safetensors" "$BIN"

# ==========================================================================
if [ "$LARGE" = 1 ]; then
    INPUT="$BENCH_DIR/large-${LARGE_DENSE}x8192.h5"
    est=$((LARGE_DENSE * 8192 * 8192 * 4 + (64 << 20)))
    if [ -f "$INPUT" ]; then need_space $((est + (1 << 30))); else need_space $((2 * est + (1 << 30))); fi
    ensure_input "$INPUT" --dense "$LARGE_DENSE"
    LOG="$BENCH_DIR/large_test.time"
    say "building tests/large_file.rs"
    # The test binary's path, from cargo's JSON messages.
    TEST_BIN=$(cd "$REPO" && cargo test --release --test large_file --no-run --message-format=json 2>/dev/null |
        "$PYTHON" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "large_file" and m.get("executable"):
        print(m["executable"])')
    [ -x "$TEST_BIN" ] || die "could not build tests/large_file.rs (cargo test --release --test large_file --no-run)"
    OUTPUTS+=("${INPUT%.h5}.large_test.safetensors")
    say "K2S_LARGE_FILE=$INPUT cargo test --release --test large_file -- --ignored --nocapture"
    status=0
    set +e
    (cd "$REPO" && K2S_LARGE_FILE="$INPUT" /usr/bin/time -v -o "$LOG" \
        "$TEST_BIN" --ignored --nocapture 2>&1) | tee "$BENCH_DIR/large_test.out"
    status=${PIPESTATUS[0]}
    set -e
    drop_lock
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$LOG")
    detail=$(sed -n 's/^large file: //p' "$BENCH_DIR/large_test.out" | sed 's|/[^ ]*/||g')
    verdict=$([ "$status" = 0 ] && echo passed || echo "FAILED (exit $status)")
    section=$(printf '%s\n' "<!-- large -->" "## Large file (> 4 GiB)" "" \
        "\`$COMMAND_LINE\` on $(date -u '+%Y-%m-%d %H:%M UTC'): \`tests/large_file.rs\` $verdict in $wall (m:ss)" \
        "on \`$(basename "$INPUT")\` ($LARGE_DENSE Dense 8192x8192 + 1000 BatchNormalization)." "" \
        "Test output: ${detail:-none} (peak RSS of the test process, from /proc/self/status VmHWM)." "" \
        "The test reads only the output's header, checks every name, shape and offset, compares 64-byte" \
        "samples (start, middle, end of every tensor, and across the 4 GiB offset of the input and of the" \
        "output) between the generator's formula, the input and the output, then streams the whole output" \
        "data once against the formula.")
    echo "$section"
    # Replace any earlier large-file section (the default run keeps it).
    if [ -f "$RESULTS" ]; then sed -i '/^<!-- large -->$/,$d' "$RESULTS"; fi
    printf '%s\n' "$section" >>"$RESULTS"
    say "appended to $RESULTS"
    exit "$status"
fi

OUT="$BENCH_DIR/out.safetensors"
OUT_PT="$BENCH_DIR/out_pytorch.safetensors"
OUT_PY="$BENCH_DIR/out_python.safetensors"
OUT_CAT="$BENCH_DIR/out.bin"
OUTPUTS+=("$OUT" "$OUT_PT" "$OUT_PY" "$OUT_CAT")
SAMPLES="$BENCH_DIR/samples.txt"
: >"$SAMPLES"

# timed LABEL CMD...: one run under /usr/bin/time -v; records "LABEL seconds rss_kib".
timed() {
    local label=$1; shift
    local log="$BENCH_DIR/time.log"
    if ! /usr/bin/time -v -o "$log" "$@" >/dev/null 2>"$BENCH_DIR/stderr.log"; then
        cat "$BENCH_DIR/stderr.log" "$log" >&2
        die "$label failed: $*"
    fi
    awk -v label="$label" -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
        /Maximum resident set size/ { rss = $2 }
        END { printf "%s %.3f %d\n", label, s, rss }' "$log" >>"$SAMPLES"
    printf '   %-14s %s\n' "$label" "$(tail -n 1 "$SAMPLES" | cut -d' ' -f2-)" >&2
}

settle() { rm -f "${OUTPUTS[@]}"; sync; }

# --- many layers: ROUNDS rounds on a file of MANY_LAYERS small layers -------
MANY_INPUT=""
if [ -n "$MANY_LAYERS" ] && [ "$MANY_LAYERS" != 0 ]; then
    MANY_INPUT="$BENCH_DIR/many-${MANY_LAYERS}.h5"
    # About 3.2 KB per layer, plus one output of a sixth of that.
    many_bytes=$((MANY_LAYERS * 3800 + (256 << 20)))
    if [ -f "$MANY_INPUT" ]; then need_space "$many_bytes"; else need_space $((2 * many_bytes)); fi
    ensure_input "$MANY_INPUT" --dense 0 --bn 0 --small "$MANY_LAYERS" --small-dim 8
    cat "$MANY_INPUT" >/dev/null
    MANY_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    say "$ROUNDS rounds on $MANY_INPUT ($MANY_LAYERS layers)"
    for ((r = 1; r <= ROUNDS; r++)); do
        settle
        timed many_convert "$BIN" convert "$MANY_INPUT" -o "$OUT" --force -q
        timed many_inspect "$BIN" inspect "$MANY_INPUT"
        settle
        timed many_pytorch "$BIN" convert "$MANY_INPUT" -o "$OUT_PT" --force -q --layout pytorch
    done
    settle
    MANY_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
    say "load average $MANY_LOAD_BEFORE before, $MANY_LOAD_AFTER after"
fi
if [ "$MANY_ONLY" = 1 ]; then
    drop_lock
    [ -n "$MANY_INPUT" ] || die "--many needs MANY_LAYERS > 0"
    echo "$MANY_LAYERS layers, $(stat -c %s "$MANY_INPUT") bytes; load average $MANY_LOAD_BEFORE before, $MANY_LOAD_AFTER after"
    echo "| Command | Wall, median | min - max | Peak RSS | Target |"
    echo "|---|---:|---:|---:|---|"
    for label in many_convert many_inspect many_pytorch; do
        awk -v label="$label" '$1 == label { print $2, $3 }' "$SAMPLES" | sort -n | awk -v label="$label" '
            { w[NR] = $1; if ($2 > rss) rss = $2 }
            END {
                med = (NR % 2) ? w[(NR + 1) / 2] : (w[NR / 2] + w[NR / 2 + 1]) / 2
                target = (label == "many_convert") ? "< 2 s; peak RSS < 128 MiB" : ""
                printf "| `%s` | %.2f s | %.2f - %.2f s | %.0f MiB | %s |\n", label, med, w[1], w[NR], rss / 1024, target
            }'
    done
    exit 0
fi

# ==========================================================================
"$PYTHON" -c 'import safetensors.numpy' 2>/dev/null ||
    die "$PYTHON lacks safetensors: pip install h5py numpy safetensors"
INPUT="$BENCH_DIR/big-${SIZE_GB}GB.h5"
est=$("$PYTHON" -c "print(int(float('$SIZE_GB') * 1e9) + (64 << 20))")
# The input, plus one output at a time (with headroom).
if [ -f "$INPUT" ]; then need_space $((est + (1 << 30))); else need_space $((2 * est + (1 << 30))); fi
ensure_input "$INPUT" --gb "$SIZE_GB"
INPUT_BYTES=$(stat -c %s "$INPUT")
rm -f "$BENCH_DIR/scale.txt.sizes"

PY_ROUTE='
import sys, h5py
from safetensors.numpy import save_file
tensors = {}
with h5py.File(sys.argv[1], "r") as f:
    f.visititems(lambda name, obj: tensors.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
save_file(tensors, sys.argv[2])
'

# loop LABEL REPS CMD...: REPS runs, each timed with the monotonic clock
# (for commands of a few milliseconds); one extra run under /usr/bin/time for RSS.
loop() {
    local label=$1 reps=$2; shift 2
    local i t0 t1
    for ((i = 0; i < reps; i++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null
        t1=$(date +%s%N)
        echo "$label $(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.4f", d / 1e9 }') -" >>"$SAMPLES"
    done
    timed "$label.rss" "$@"
}

say "warming the page cache"
cat "$INPUT" >/dev/null
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "$ROUNDS rounds on $INPUT ($INPUT_BYTES bytes)"
for ((r = 1; r <= ROUNDS; r++)); do
    say "round $r"
    settle
    timed cat sh -c 'cat "$1" > "$2"' sh "$INPUT" "$OUT_CAT"
    settle
    timed cat_fsync sh -c 'cat "$1" > "$2" && sync "$2"' sh "$INPUT" "$OUT_CAT"
    settle
    timed convert "$BIN" convert "$INPUT" -o "$OUT" --force -q
    timed verify "$BIN" verify "$INPUT" "$OUT"
    loop inspect_h5 "$INSPECT_REPS" "$BIN" inspect "$INPUT"
    loop inspect_st "$INSPECT_REPS" "$BIN" inspect "$OUT"
    timed stats "$BIN" inspect --stats "$INPUT"
    settle
    timed pytorch "$BIN" convert "$INPUT" -o "$OUT_PT" --force -q --layout pytorch
    settle
    timed python "$PYTHON" -c "$PY_ROUTE" "$INPUT" "$OUT_PY"
done
settle

# --- scale curve ----------------------------------------------------------
SCALE_SAMPLES="$BENCH_DIR/scale.txt"
: >"$SCALE_SAMPLES"
SCALE_NOTES=""
for size in $SCALE; do
    path="$BENCH_DIR/big-${size}GB.h5"
    bytes=$("$PYTHON" -c "print(int(float('$size') * 1e9) + (64 << 20))")
    # The input (unless there), and one output at a time, with 1 GiB to spare.
    need=$((bytes + (1 << 30)))
    [ -f "$path" ] || need=$((need + bytes))
    free=$(free_bytes)
    if [ "$free" -lt "$need" ]; then
        SCALE_NOTES="$SCALE_NOTES- ${size} GB skipped: $((free >> 20)) MiB free, needs $((need >> 20)) MiB\n"
        say "scale curve: skipping $size GB ($((free >> 20)) MiB free, needs $((need >> 20)) MiB)"
        continue
    fi
    generated=0
    if [ "$path" != "$INPUT" ] && [ ! -f "$path" ]; then generated=1; fi
    ensure_input "$path" --gb "$size"
    cat "$path" >/dev/null
    say "scale curve: $size GB, $SCALE_ROUNDS round(s)"
    for ((r = 1; r <= SCALE_ROUNDS; r++)); do
        settle
        SAMPLES="$SCALE_SAMPLES" timed "$size:cat_fsync" sh -c 'cat "$1" > "$2" && sync "$2"' sh "$path" "$OUT_CAT"
        settle
        SAMPLES="$SCALE_SAMPLES" timed "$size:convert" "$BIN" convert "$path" -o "$OUT" --force -q
        settle
        SAMPLES="$SCALE_SAMPLES" timed "$size:pytorch" "$BIN" convert "$path" -o "$OUT_PT" --force -q --layout pytorch
    done
    settle
    echo "$size $(stat -c %s "$path")" >>"$SCALE_SAMPLES.sizes"
    if [ "$generated" = 1 ]; then rm -f "$path" "$path.json"; fi
done
drop_lock
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ---------------------------------------------------------------
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then GIT_REV="$GIT_REV + uncommitted changes in src/"; fi
MANY_BYTES=$([ -n "$MANY_INPUT" ] && stat -c %s "$MANY_INPUT" || echo 0)
export MANY_INPUT MANY_LAYERS MANY_BYTES MANY_LOAD_BEFORE="${MANY_LOAD_BEFORE:-}" MANY_LOAD_AFTER="${MANY_LOAD_AFTER:-}"
export SCALE_SAMPLES SCALE_NOTES SCALE_ROUNDS SAMPLES INPUT INPUT_BYTES ROUNDS INSPECT_REPS COMMAND_LINE GIT_REV LOAD_BEFORE LOAD_AFTER
export MACHINE="$(nproc) cores ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $BENCH_DIR on $(df -PT "$BENCH_DIR" | awk 'NR == 2 { print $2 }')"
export TOOLS="$(rustc -V 2>/dev/null), $("$PYTHON" -c 'import sys, h5py, numpy, safetensors; print(f"Python {sys.version.split()[0]}, h5py {h5py.__version__}, numpy {numpy.__version__}, safetensors {safetensors.__version__}")')"
"$PYTHON" - "$RESULTS" <<'EOF'
import os, statistics, sys, datetime

env = os.environ
runs = {}
for line in open(env["SAMPLES"]):
    label, secs, rss = line.split()
    r = runs.setdefault(label, {"wall": [], "rss": []})
    r["wall"].append(float(secs))
    if rss != "-":
        r["rss"].append(int(rss) / 1024)

def wall(label):
    return statistics.median(runs[label]["wall"])

def rss(label):
    r = runs.get(label + ".rss", runs[label])["rss"]
    return max(r)

cat, cat_fsync = wall("cat"), wall("cat_fsync")
name = os.path.basename(env["INPUT"])
many = os.path.basename(env.get("MANY_INPUT", "")) or "-"
rows = [
    # label, command, writes output?, (target text, check(wall, rss) -> bool) or None
    ("cat", f"cat {name} > out.bin", False, None),
    ("cat_fsync", f"cat {name} > out.bin && sync out.bin", False, None),
    ("convert", f"keras2safetensors convert {name} -o out.safetensors --force -q", True,
     ("<= 1.1x cat + sync; peak RSS <= 64 MiB", lambda w, m: (w <= 1.1 * cat_fsync, m <= 64))),
    ("pytorch", f"keras2safetensors convert {name} --layout pytorch ...", True,
     ("<= 2x cat + sync; peak RSS <= 128 MiB", lambda w, m: (w <= 2 * cat_fsync, m <= 128))),
    ("python", "h5py read every dataset + safetensors.numpy.save_file", True, None),
    ("inspect_h5", f"keras2safetensors inspect {name}", False,
     ("< 50 ms", lambda w, m: (w < 0.050,))),
    ("inspect_st", "keras2safetensors inspect out.safetensors", False, None),
    ("stats", f"keras2safetensors inspect --stats {name}", False,
     ("<= 1.2x cat", lambda w, m: (w <= 1.2 * cat,))),
    ("verify", f"keras2safetensors verify {name} out.safetensors", False,
     ("<= 1.2x cat", lambda w, m: (w <= 1.2 * cat,))),
    # Another input (many small layers): no ratio to `cat` of the big file.
    ("many_convert", f"keras2safetensors convert {many} -o out.safetensors --force -q", False,
     ("< 2 s; peak RSS < 128 MiB", lambda w, m: (w < 2, m < 128))),
    ("many_inspect", f"keras2safetensors inspect {many}", False, None),
    ("many_pytorch", f"keras2safetensors convert {many} --layout pytorch ...", False, None),
]

def fmt_s(s):
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"

out = []
out.append("# Benchmark results\n")
out.append(f"- Command: `{env['COMMAND_LINE']}` (ROUNDS={env['ROUNDS']}, INSPECT_REPS={env['INSPECT_REPS']})")
out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; keras2safetensors at {env['GIT_REV']}")
out.append(f"- Machine: {env['MACHINE']}; load average {env['LOAD_BEFORE']} before, {env['LOAD_AFTER']} after")
out.append(f"- Tools: {env['TOOLS']}")
out.append(f"- Input: `{name}`, {int(env['INPUT_BYTES']):,} bytes ({int(env['INPUT_BYTES']) / 2**30:.2f} GiB), "
           "written by `scripts/make_big_keras.py`, in the page cache (read once before the runs)")
out.append(f"- Each command ran {env['ROUNDS']} times, alternating; inspect {int(env['ROUNDS']) * int(env['INSPECT_REPS'])} times. "
           "Wall: median (min-max); RSS: largest maximum resident set size (GNU time)\n")
out.append("| Command | Wall, median | min - max | x cat | x cat+fsync | Peak RSS | Target | Met |")
out.append("|---|---:|---:|---:|---:|---:|---|---|")
for label, command, writes, target in rows:
    if label not in runs:
        continue
    w = runs[label]["wall"]
    m = rss(label)
    ratio = "" if label.startswith("many_") else f"{wall(label) / cat:.2f}"
    ratio_sync = f"{wall(label) / cat_fsync:.2f}" if writes or label.startswith("cat") else ""
    tgt, met = "", ""
    if target:
        tgt = target[0]
        met = " / ".join("yes" if ok else "**no**" for ok in target[1](wall(label), m))
    out.append(f"| `{command}` | {fmt_s(wall(label))} | {fmt_s(min(w))} - {fmt_s(max(w))} | {ratio} | {ratio_sync} "
               f"| {m:.0f} MiB | {tgt} | {met} |")
out.append("")
if env.get("MANY_INPUT"):
    out.append(f"The `many_` rows read `{many}`, {env['MANY_LAYERS']} small Dense layers "
               f"({int(env['MANY_BYTES']):,} bytes; `make_big_keras.py --dense 0 --bn 0 --small "
               f"{env['MANY_LAYERS']} --small-dim 8`): the cost per layer. Load average "
               f"{env['MANY_LOAD_BEFORE']} before those rounds, {env['MANY_LOAD_AFTER']} after.\n")
out.append("`convert` writes to a temporary file, fsyncs it and renames it, so the time to get its "
           "output onto the disk is part of its wall time; `cat > out.bin` leaves the data in the page "
           "cache. The `x cat+fsync` column compares with a `cat` that also syncs its output.")
scale = {}
for line in open(env["SCALE_SAMPLES"]):
    label, secs, rss = line.split()
    size, what = label.split(":")
    scale.setdefault(size, {}).setdefault(what, []).append((float(secs), int(rss) / 1024))
sizes = {}
if os.path.exists(env["SCALE_SAMPLES"] + ".sizes"):
    for line in open(env["SCALE_SAMPLES"] + ".sizes"):
        size, b = line.split()
        sizes[size] = int(b)
notes = env.get("SCALE_NOTES", "").replace("\\n", "\n").strip()
if scale or notes:
    out.append("")
    out.append(f"## Scale curve ({env['SCALE_ROUNDS']} run(s) per size; wall, median if several; "
               "peak RSS; ratio to `cat` + sync of the same file)\n")
    out.append("| File | Bytes | `cat` + sync | `convert` | x | Peak RSS | `--layout pytorch` | x | Peak RSS |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in sorted(scale.items(), key=lambda kv: float(kv[0])):
        med = lambda what: statistics.median(s for s, _ in r[what])
        top = lambda what: max(m for _, m in r[what])
        c = med("cat_fsync")
        out.append(f"| {size} GB | {sizes.get(size, 0):,} | {fmt_s(c)} | {fmt_s(med('convert'))} | "
                   f"{med('convert') / c:.2f} | {top('convert'):.0f} MiB | {fmt_s(med('pytorch'))} | "
                   f"{med('pytorch') / c:.2f} | {top('pytorch'):.0f} MiB |")
    if notes:
        out.append("")
        out.append(notes)
text = "\n".join(out) + "\n"
path = sys.argv[1]
large = ""
if os.path.exists(path):
    old = open(path).read()
    if "<!-- large -->" in old:
        large = "\n" + old[old.index("<!-- large -->"):]
open(path, "w").write(text + large)
print(text)
EOF
say "written to $RESULTS"
