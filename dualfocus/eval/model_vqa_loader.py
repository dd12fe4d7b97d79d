"""LLaVA's generic question-file runner: a jsonl of `question_id`, `image`, `text`, with DualFocus.

    python -m dualfocus.eval.model_vqa_loader --model-path CKPT --question-file Q --answers-file A \
        [--benchmark NAME] [...]

`--benchmark` picks a registered benchmark (`python -m dualfocus.benchmarks names`; default `vqa`:
a generic LLaVA jsonl, free-form answers): its question format and DualFocus protocol; the other flags are
LLaVA's, see `dualfocus.eval.runner.run_eval` (the help text) for sharding, resume and errors.
"""

import sys

from dualfocus.eval.cli import main

if __name__ == "__main__":
    main(None, sys.argv[1:])
