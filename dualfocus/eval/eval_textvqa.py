"""LLaVA's TextVQA scorer (`Accuracy: NN.NN%`); the code is `dualfocus.benchmarks.textvqa`.

    python -m dualfocus.eval.eval_textvqa --annotation-file TextVQA_0.5.1_val.json \
        (--result-file answers/merge.jsonl | --result-dir answers/) [--output-json scores.json]
"""

import sys

from dualfocus.benchmarks.textvqa import main

__all__ = ["main"]

if __name__ == "__main__":
    main(sys.argv[1:])
