"""Data pipeline: corpora, tokenizers, and tokenized fixed-length datasets on disk."""

from partgm.data.corpora import load_documents
from partgm.data.prepare import PreparedData, prepare_dataset
from partgm.data.tokenizers import Tokenizer, load_tokenizer

__all__ = ["PreparedData", "Tokenizer", "load_documents", "load_tokenizer", "prepare_dataset"]
