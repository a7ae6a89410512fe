"""peftbench: a reproducible benchmark of PEFT methods (MetaMathQA -> GSM8K)."""

__version__ = "0.1.0"
