"""Reading a .tflite flatbuffer: tensors, constant buffers, operators.

Uses the schema module that ships with ``ai_edge_litert`` (public package
module, generated from the TFLite schema) rather than TensorFlow internals.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from collabopt.errors import InvalidFileError

_TENSOR_TYPES = {
    v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)
}
_NUMPY_DTYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}
_OPCODES = {
    v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
}


@dataclasses.dataclass
class Tensor:
    """One tensor of the flatbuffer's main subgraph."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray | None  # values of a constant buffer, else None
    scales: np.ndarray | None
    zero_points: np.ndarray | None
    quantized_dimension: int


@dataclasses.dataclass
class Operator:
    """One operator: its builtin name and the indices of its tensors."""

    index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass
class Graph:
    """The main subgraph of a flatbuffer."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _dtype_name(type_code: int) -> str:
    name = _TENSOR_TYPES.get(type_code, str(type_code))
    dtype = _NUMPY_DTYPES.get(name)
    return np.dtype(dtype).name if dtype is not None else name.lower()


def _buffer_bytes(model, content: bytes, index: int) -> bytes | None:
    if index is None or index >= len(model.buffers):
        return None
    buffer = model.buffers[index]
    if buffer.data is not None and len(buffer.data):
        return bytes(np.asarray(buffer.data, dtype=np.uint8))
    # Models over 2 GB keep buffers after the flatbuffer (offset/size).
    if getattr(buffer, "offset", 0) and buffer.offset > 1 and buffer.size:
        return content[buffer.offset : buffer.offset + buffer.size]
    return None


def parse(content: bytes, source: str = "the flatbuffer") -> Graph:
    """Parses the main subgraph of a flatbuffer (cached per content).

    Args:
        content: The bytes of a .tflite file.
        source: How to name the data in error messages (e.g. the file path).

    Raises:
        InvalidFileError: the bytes are not a complete, consistent TFLite
            flatbuffer (truncated, corrupted, or another format).
    """
    try:
        return _parse(bytes(content))
    except InvalidFileError as error:
        raise InvalidFileError(f"{source} {error}") from None
    except Exception as error:  # flatbuffers raises struct.error, TypeError, IndexError, ... on bad bytes
        raise InvalidFileError(
            f"{source} is not a valid TFLite flatbuffer: it is truncated or corrupted "
            f"({type(error).__module__}.{type(error).__name__} while reading it); expected the bytes of a .tflite file "
            "as written by the TFLite converter."
        ) from None


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvalidFileError(f"is not a valid TFLite flatbuffer: {what}; it is truncated or corrupted.")


@functools.lru_cache(maxsize=8)
def _parse(content: bytes) -> Graph:
    _check(len(content) >= 8 and content[4:8] == b"TFL3", "the 'TFL3' identifier is missing")
    root = int.from_bytes(content[:4], "little")
    _check(8 <= root < len(content), f"the root offset {root} points outside the {len(content)} bytes")
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    _check(bool(model.subgraphs), "it has no subgraph")
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    subgraph = model.subgraphs[0]
    n_tensors = len(subgraph.tensors or [])
    for t in subgraph.tensors or []:
        _check(t.buffer is None or 0 <= t.buffer < max(len(buffers), 1), f"tensor buffer index {t.buffer} is out of range")
        _check(all(s >= -1 for s in (t.shape if t.shape is not None else ())), "a tensor has a negative dimension")
    for op in subgraph.operators or []:
        _check(0 <= op.opcodeIndex < len(codes), f"operator code index {op.opcodeIndex} is out of range")
        for x in list(op.inputs if op.inputs is not None else ()) + list(op.outputs if op.outputs is not None else ()):
            _check(-1 <= x < n_tensors, f"an operator refers to tensor {x} of {n_tensors}")
    for x in list(subgraph.inputs if subgraph.inputs is not None else ()) + list(subgraph.outputs if subgraph.outputs is not None else ()):
        _check(0 <= x < n_tensors, f"a graph input/output refers to tensor {x} of {n_tensors}")
    tensors = []
    for i, t in enumerate(subgraph.tensors):
        dtype = _dtype_name(t.type)
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
        raw = _buffer_bytes(model, content, t.buffer)
        data = None
        if raw is not None and dtype in {np.dtype(d).name for d in _NUMPY_DTYPES.values()}:
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            # (sparse-encoded constants store fewer values than their shape)
            _check(
                getattr(t, "sparsity", None) is not None or len(raw) == expected,
                f"tensor {i} holds {len(raw)} bytes for shape {shape} ({dtype}), expected {expected}",
            )
            data = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape) if shape else np.frombuffer(raw, dtype=np.dtype(dtype))
        q = t.quantization
        scales = np.asarray(q.scale, np.float32) if q is not None and q.scale is not None else None
        zps = np.asarray(q.zeroPoint, np.int64) if q is not None and q.zeroPoint is not None else None
        tensors.append(
            Tensor(
                index=i,
                name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                dtype=dtype,
                shape=shape,
                data=data,
                scales=scales,
                zero_points=zps,
                quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
            )
        )
    operators = []
    for i, op in enumerate(subgraph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = _OPCODES.get(builtin, str(builtin))
        if name == "CUSTOM" and code.customCode:
            name = "CUSTOM:" + (code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode))
        operators.append(
            Operator(
                index=i,
                op=name,
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ()) if x >= 0),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
            )
        )
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(x) for x in (subgraph.inputs if subgraph.inputs is not None else ())),
        outputs=tuple(int(x) for x in (subgraph.outputs if subgraph.outputs is not None else ())),
    )
