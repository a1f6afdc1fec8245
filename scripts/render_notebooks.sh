#!/usr/bin/env bash
# Render the notebooks to HTML, executed, for people without Jupyter: build/notebooks/NAME.html.
#
#   bash scripts/render_notebooks.sh                                  # every notebooks/*.ipynb
#   bash scripts/render_notebooks.sh notebooks/model_report.ipynb     # some of them
#
# Each notebook reads its input from the same variables it reads inside Jupyter (a relative path
# is taken from the directory you run this script in):
#
#   model_report.ipynb         SESSIONWATCH_MODEL: an artefact directory `sessionwatch train
#                              --out DIR` wrote (default: model/ at the root of the checkout), e.g.
#                              .venv/bin/sessionwatch train --out model
#   investigate_session.ipynb, fleet_overview.ipynb, tune_policy.ipynb (every notebook whose
#                              metadata says "needs": "archive", the default)
#                              SESSIONWATCH_CLICKHOUSE (clickhouse://host:9000/sessionwatch, with
#                              SESSIONWATCH_CLICKHOUSE_USER / _PASSWORD) or SESSIONWATCH_CHDB_DIR (a
#                              chDB directory; default .sessionwatch/archive, where the demo writes).
#                              Stop the demo's archiver first: chDB opens a directory in one process;
#                              the notebooks run one after the other, each closing it at its end.
#                              tune_policy.ipynb also reads SESSIONWATCH_POLICY (a policy file for its
#                              what-if; default examples/policy.yaml).
#
# Also: SESSIONWATCH_VENV (default .venv), OUT (default build/notebooks), TIMEOUT (seconds per
# cell, default 300). A notebook whose input is missing is skipped with the reason; the script
# exits 1 if any notebook was skipped or failed. The HTML holds the data the notebooks showed
# (someone's archive): build/ is git-ignored, keep it that way.
#
# Needs nbconvert (>= 7): in the dev extras (`pip install -e ".[dev]"`).
set -uo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/.."
ROOT=$PWD

VENV=${SESSIONWATCH_VENV:-.venv}
case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY="$VENV/bin/python"
OUT=${OUT:+$(cd "$CALLER_DIR" && mkdir -p "$OUT" && cd "$OUT" && pwd)}
OUT=${OUT:-$ROOT/build/notebooks}
TIMEOUT=${TIMEOUT:-300}

if [ ! -x "$PY" ]; then
    echo "render_notebooks: no Python at $PY; run scripts/test.sh once (it creates $VENV), or set" \
         "SESSIONWATCH_VENV" >&2
    exit 2
fi
if ! "$PY" -c "import nbconvert, sys; sys.exit(int(nbconvert.__version__.split('.')[0]) < 7)" \
        2>/dev/null; then
    echo "render_notebooks: nbconvert >= 7 is not installed in $VENV (it is not in the dev extras):" \
         "$PY -m pip install 'nbconvert>=7'" >&2
    exit 2
fi

absolute() {  # a path the user gave, relative to where they ran the script
    case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$CALLER_DIR" "$1" ;; esac
}
if [ -n "${SESSIONWATCH_MODEL:-}" ]; then
    SESSIONWATCH_MODEL=$(absolute "$SESSIONWATCH_MODEL"); export SESSIONWATCH_MODEL
fi
if [ -n "${SESSIONWATCH_POLICY:-}" ]; then
    SESSIONWATCH_POLICY=$(absolute "$SESSIONWATCH_POLICY"); export SESSIONWATCH_POLICY
fi
if [ -n "${SESSIONWATCH_CHDB_DIR:-}" ]; then
    SESSIONWATCH_CHDB_DIR=$(absolute "$SESSIONWATCH_CHDB_DIR"); export SESSIONWATCH_CHDB_DIR
fi

# What a notebook reads: its metadata says "sessionwatch": {"needs": "model"}; others read an archive.
needs() {
    "$PY" -c 'import json, sys
print(json.load(open(sys.argv[1], encoding="utf-8"))["metadata"].get("sessionwatch", {}).get("needs", "archive"))' "$1"
}

missing_input() {  # prints why the notebook cannot run here, or nothing
    case "$(needs "$1")" in
        model)
            local dir=${SESSIONWATCH_MODEL:-$ROOT/model}
            [ -f "$dir/model.json" ] || echo "no artefact at $dir (set SESSIONWATCH_MODEL, or" \
                "train one: $VENV/bin/sessionwatch train --out model)"
            ;;
        archive)
            if [ -z "${SESSIONWATCH_CLICKHOUSE:-}" ]; then
                local dir=${SESSIONWATCH_CHDB_DIR:-$ROOT/.sessionwatch/archive}
                [ -d "$dir" ] || echo "no chDB archive at $dir (set SESSIONWATCH_CHDB_DIR or" \
                    "SESSIONWATCH_CLICKHOUSE, or run the demo: bash scripts/demo.sh)"
            fi
            ;;
    esac
}

if [ $# -gt 0 ]; then
    notebooks=("$@")
else
    mapfile -t notebooks < <(find notebooks -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)
fi
mkdir -p "$OUT"

rendered=0 problems=0
for nb in "${notebooks[@]}"; do
    [ -f "$nb" ] || nb=$(absolute "$nb")
    if [ ! -f "$nb" ]; then
        echo "render_notebooks: $nb: no such notebook" >&2; problems=$((problems + 1)); continue
    fi
    why=$(missing_input "$nb")
    if [ -n "$why" ]; then
        echo "render_notebooks: skipped $nb: $why" >&2; problems=$((problems + 1)); continue
    fi
    # The kernel runs in the notebook's directory, as in Jupyter; outputs never touch the .ipynb.
    if "$PY" -m nbconvert --to html --execute --ExecutePreprocessor.timeout="$TIMEOUT" \
            --ExecutePreprocessor.kernel_name=python3 --output-dir "$OUT" "$nb"; then
        rendered=$((rendered + 1))
    else
        echo "render_notebooks: $nb failed (the cell's error is above)" >&2; problems=$((problems + 1))
    fi
done
echo "render_notebooks: $rendered rendered into $OUT/, $problems skipped or failed" >&2
[ "$problems" -eq 0 ]
