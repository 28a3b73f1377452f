"""Self-distillation of a language-model solver from a frozen critic's feedback.

One module per pipeline stage (``models``, ``problems``, ...), sharing ground in ``artifacts``,
``config``, ``tasks`` and ``engines``. Stage modules never import each other.
"""

__version__ = "0.1.0"
