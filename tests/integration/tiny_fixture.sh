# tiny_fixture.sh: the fixture the training and pipeline shell tests share, sourced (not run):
# a tiny random Qwen2-VL (hidden 32, 2 layers, a 1-block vision tower; the Qwen3 tokenizer
# fixture, whose vision special tokens are Qwen2-VL's), generated image-caption corpora, and
# the expect / fail helpers. One idea: every test builds its model and data the same way, so a
# change to the fixture is made once. A script finds it next to itself:
#     . "$(dirname "$0")/tiny_fixture.sh"            (tests/integration/*.sh)
#     . "$(dirname "$0")/../integration/tiny_fixture.sh"   (tests/mpi/*.sh)
# meson runs the scripts by absolute path (find_program), so dirname names their folder.
# Conventions: the caller's $T is its scratch folder (fixture_scratch makes one); $CASE, when
# set, names the case in failure lines. The functions' own variables start with tf_, so they do
# not overwrite the caller's (sh has no locals).

# fail MESSAGE...: one line on stderr naming the case, exit 1. A script may redefine it (after
# sourcing) to print more; expect calls whichever is defined.
fail() { echo "FAIL${CASE:+ ($CASE)}: $*" >&2; exit 1; }

# expect CODE CMD...: runs CMD (stdout to $T/out, stderr to $T/err), fails unless it exits CODE
expect() {
    want=$1; shift
    set +e; "$@" >"$T/out" 2>"$T/err"; got=$?; set -e
    [ "$got" -eq "$want" ] || { cat "$T/out" "$T/err" >&2; fail "exit $got, wanted $want: $*"; }
}

# fixture_scratch NAME: $T = a new folder /tmp/NAME-XXXXXX, removed at exit; one OpenMP thread
# per process (the machine's cores are shared, and ranks must not fight over them)
fixture_scratch() {
    T=$(mktemp -d "/tmp/$1-XXXXXX")
    trap 'rm -rf "$T"' EXIT
    export OMP_NUM_THREADS=1
}

# progress_steps FILE [STEP]: the reproducible part of each progress line in FILE (what comes
# before the timings), one line per step; only step STEP's when given. Succeeds when none match.
progress_steps() { grep "\"step\":${2:+ $2,}" "$1" | sed 's/, "step_seconds.*//'; }

# run_until_step NAME STEP WHAT CMD...: starts CMD in the background (stdout appended to the
# emptied $T/NAME.out, stderr to $T/NAME.err) and returns once its STEPth progress line is out,
# with its process id in $pid (to kill and wait for). Fails, naming WHAT and the run's stderr,
# when the run ends first.
run_until_step() {
    tf_name=$1 tf_step=$2 tf_what=$3; shift 3
    : >"$T/$tf_name.out"   # there before the loop below counts its lines
    "$@" >>"$T/$tf_name.out" 2>"$T/$tf_name.err" &
    pid=$!
    while [ "$(grep -c '"step":' "$T/$tf_name.out" || true)" -lt "$tf_step" ]; do
        kill -0 "$pid" 2>/dev/null ||
            fail "${tf_what}the run ended before step $tf_step: $(cat "$T/$tf_name.err")"
        sleep 0.05
    done
}

# tiny_config_write FILE: the tiny Qwen2-VL's config.json
tiny_config_write() {
    cat >"$1" <<'JSON'
{"model_type": "qwen2_vl", "image_token_id": 151655, "video_token_id": 151656,
 "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": true,
 "bos_token_id": 151643, "eos_token_id": 151645,
 "text_config": {"vocab_size": 151936, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]}},
 "vision_config": {"depth": 1, "embed_dim": 32, "num_heads": 4, "mlp_ratio": 2, "hidden_size": 32}}
JSON
}

# tiny_model_make ADAPTCTL CONFIG OUT TOKENIZER_DIR: CONFIG written by tiny_config_write, and the
# model in OUT initialised from it with seed 1
tiny_model_make() {
    tiny_config_write "$2"
    "$1" model init --config "$2" --out "$3" --seed 1 --tokenizer "$4" >/dev/null
}

# tiny_images_make ADAPTCTL OUT COUNT SEED SIZE_ARGS...: `adaptctl data generate` of COUNT
# image-caption pairs into OUT (OUT/captions.jsonl, OUT/llava.json, the images); SIZE_ARGS is
# --size N or --min-size A --max-size B
tiny_images_make() {
    tf_a=$1 tf_out=$2 tf_count=$3 tf_seed=$4; shift 4
    "$tf_a" data generate --out "$tf_out" --count "$tf_count" --seed "$tf_seed" "$@" --jobs 2 \
        >/dev/null
}

# tiny_corpus_import ADAPTCTL OUT INPUT [SHARD_SIZE]: `adaptctl data import` of INPUT (jsonl or
# llava json) into the corpus OUT, in shards of SHARD_SIZE records (else the importer's default)
tiny_corpus_import() {
    if [ -n "${4:-}" ]; then
        "$1" data import --out "$2" --jobs 2 --shard-size "$4" "$3" >/dev/null
    else
        "$1" data import --out "$2" --jobs 2 "$3" >/dev/null
    fi
}

# tiny_fixture_make ADAPTCTL DIR TOKENIZER_DIR SIZE_ARGS...: the standard training fixture in
# DIR: config.json, model/ (seed 1), gen/ (100 generated pairs, seed 3, images of SIZE_ARGS) and
# corpus/ (all of them, in shards of 10)
tiny_fixture_make() {
    tf_a=$1 tf_dir=$2; shift 2
    tiny_model_make "$tf_a" "$tf_dir/config.json" "$tf_dir/model" "$1"
    shift
    tiny_images_make "$tf_a" "$tf_dir/gen" 100 3 "$@"
    tiny_corpus_import "$tf_a" "$tf_dir/corpus" "$tf_dir/gen/captions.jsonl" 10
}

# tiny_train_spec NAME STEPS EVERY MAX_PIXELS [EXTRA]: $T/NAME.json, a TrainSpec training
# $T/model on $T/corpus into $T/NAME for STEPS steps (global batch 4 in micro-batches of 256
# tokens, lr 0.01 cosine, every tower trained, seed 5), a checkpoint every EVERY steps (0: none),
# the last 2 kept; images of 3136 to MAX_PIXELS pixels. EXTRA (', "key": value' ...) is added last.
tiny_train_spec() {
    cat >"$T/$1.json" <<JSON
{"model_path": "$T/model", "corpus": "$T/corpus", "output_dir": "$T/$1",
 "max_steps": $2, "global_batch": 4, "micro_batch_tokens": 256, "max_seq_len": 160,
 "lr_llm": 0.01, "warmup_ratio": 0.1, "schedule": "cosine", "weight_decay": 0.01,
 "freeze_vision": false, "freeze_merger": false, "image_min_pixels": 3136,
 "image_max_pixels": $4, "checkpoint_every": $3, "keep_last": 2, "seed": 5${5:-}}
JSON
}
