"""LLaVA's GQA converter (letters -> GQA's prediction file) and GQA eval.py's accuracy; the code is
`dualfocus.benchmarks.gqa`.

    python -m dualfocus.eval.convert_gqa_for_eval --src answers/merge.jsonl \
        --dst data/testdev_balanced_predictions.json --questions llava_gqa_testdev_balanced_mcq.jsonl \
        [--gqa-annotations data/testdev_balanced_questions.json] [--output-json scores.json]
"""

import sys

from dualfocus.benchmarks.gqa import main

__all__ = ["main"]

if __name__ == "__main__":
    main(sys.argv[1:])
