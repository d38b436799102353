"""llmgen: fine-tune, prompt and evaluate Hugging Face language models.

Core pieces live here (models, backends, tasks, training, io); metrics live in
``llmgen.evals``, one module per paper in ``llmgen.recipes``, the command line in ``llmgen.cli``.
"""

from llmgen.errors import LlmgenError

__version__ = "0.1.0"
__all__ = ["LlmgenError", "__version__"]
