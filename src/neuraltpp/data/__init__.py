"""Event-sequence datasets: containers, one module per file format, splits and batching.

Modules: ``containers`` (EventSequence, EventDataset, validation, rescale), ``records`` (raw
lists to validated sequences, opt-in repairs), ``nhp`` (NHP/THP pickles), ``easytpp`` (EasyTPP
JSON/JSONL), ``hf`` (Hugging Face ``datasets`` directories), ``tables`` (CSV/Parquet long
tables), ``splits`` (split names, random and time splits), ``batching`` (padded batches) and
``load`` (a path in any format). The public names are re-exported here.
"""

from neuraltpp.data.batching import Batch, batches, pad_sequences
from neuraltpp.data.containers import (
    DataError,
    EventDataset,
    EventSequence,
    rescale,
    validate_sequence,
)
from neuraltpp.data.easytpp import read_easytpp_json, write_easytpp_json
from neuraltpp.data.hf import read_hf_dataset, write_hf_dataset
from neuraltpp.data.load import load_dataset
from neuraltpp.data.nhp import read_pickle, write_pickle
from neuraltpp.data.records import REPAIRS
from neuraltpp.data.splits import SPLITS, FutureSplit, future_split, split_dataset
from neuraltpp.data.tables import read_tables, write_table

__all__ = [
    "REPAIRS",
    "SPLITS",
    "Batch",
    "DataError",
    "EventDataset",
    "EventSequence",
    "FutureSplit",
    "batches",
    "future_split",
    "load_dataset",
    "pad_sequences",
    "read_easytpp_json",
    "read_hf_dataset",
    "read_pickle",
    "read_tables",
    "rescale",
    "split_dataset",
    "validate_sequence",
    "write_easytpp_json",
    "write_hf_dataset",
    "write_pickle",
    "write_table",
]
