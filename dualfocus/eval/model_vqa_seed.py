"""SEED-Bench (image): LLaVA's llava-seed-bench.jsonl; score with convert_seed_for_submission.

    python -m dualfocus.eval.model_vqa_seed --model-path CKPT --question-file Q --answers-file A [...]

Flags as LLaVA's; see `dualfocus.eval.runner.run_eval` (the help text) for sharding, resume and errors.
"""

import sys

from dualfocus.eval.cli import main

if __name__ == "__main__":
    main("seed", sys.argv[1:])
