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
    data: np.ndarray | None  # values of a constant buffer (INT4: unpacked to int8), else None
    scales: np.ndarray | None
    zero_points: np.ndarray | None
    quantized_dimension: int
    nbytes: int = 0  # bytes of its constant buffer in the file (0 if not constant)
    sparse: bool = False  # stored in the converter's sparse format (``data`` is densified)
    buffer: int = 0  # index of its buffer (tensors may share one)


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
    metadata_bytes: int = 0  # bytes of the model's metadata buffers (runtime version, conversion options)


def _dtype_name(type_code: int) -> str:
    name = _TENSOR_TYPES.get(type_code, str(type_code))
    dtype = _NUMPY_DTYPES.get(name)
    return np.dtype(dtype).name if dtype is not None else name.lower()


def unpack_int4(raw: bytes, count: int) -> np.ndarray:
    """The ``count`` signed 4-bit values packed in ``raw``, as int8.

    LiteRT packs two values per byte, element ``2i`` in the low nibble and
    ``2i + 1`` in the high nibble (``tensor_utils::UnpackPackedIntToInt8``);
    an odd count leaves the last high nibble unused.
    """
    packed = np.frombuffer(raw, np.uint8)
    if packed.size * 2 < count:
        raise InvalidFileError(f"an INT4 buffer of {packed.size} bytes cannot hold {count} values.")
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def _vector(union) -> np.ndarray:
    # DimensionMetadata's segments / indices: an Int32Vector, Uint16Vector or Uint8Vector.
    values = getattr(union, "values", None)
    return np.asarray(values if values is not None else [], np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """The dense tensor of ``shape`` that a sparse-format constant encodes.

    ``sparsity`` is the tensor's ``SparsityParameters``: a traversal order over
    the tensor's dimensions followed by block dimensions (``block_map`` names
    the dimension each block splits), and for each traversed dimension either
    DENSE (its size) or SPARSE_CSR (segments and indices). ``values`` holds the
    stored values in traversal order.
    """
    rank = len(shape)
    order = [int(d) for d in sparsity.traversalOrder]
    block_map = [int(d) for d in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    positions = np.zeros(1, np.int64)
    coords: list[np.ndarray] = []
    for meta in sparsity.dimMetadata:
        if meta.format == schema.DimensionType.DENSE:
            n = int(meta.denseSize)
            coords = [np.repeat(c, n) for c in coords]
            coords.append(np.tile(np.arange(n), positions.size))
            positions = (positions[:, None] * n + np.arange(n)).reshape(-1)
        else:
            segments, indices = _vector(meta.arraySegments), _vector(meta.arrayIndices)
            starts, counts = segments[positions], segments[positions + 1] - segments[positions]
            total = int(counts.sum())
            offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            positions = offsets + np.arange(total)
            coords = [np.repeat(c, counts) for c in coords]
            coords.append(indices[positions])
    dense_coords = []
    for dim in range(rank):
        coord = coords[order.index(dim)]
        if dim in block_map:
            level = order.index(rank + block_map.index(dim))
            coord = coord * int(sparsity.dimMetadata[level].denseSize) + coords[level]
        dense_coords.append(coord)
    if positions.size and positions.max() >= values.size:
        raise InvalidFileError(f"a sparse tensor of shape {shape} refers to value {positions.max()} of {values.size}.")
    out = np.zeros(shape, values.dtype)
    out[tuple(dense_coords)] = values[positions]
    return out


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
        if raw is not None and dtype == "int4":
            count = 2 * len(raw) if t.sparsity is not None else (int(np.prod(shape)) if shape else 1)
            _check(
                t.sparsity is not None or len(raw) == (count + 1) // 2,
                f"tensor {i} holds {len(raw)} bytes for shape {shape} (int4), expected {(count + 1) // 2}",
            )
            data = unpack_int4(raw, count)
        elif raw is not None and dtype in {np.dtype(d).name for d in _NUMPY_DTYPES.values()}:
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            # (sparse-encoded constants store fewer values than their shape)
            _check(
                getattr(t, "sparsity", None) is not None or len(raw) == expected,
                f"tensor {i} holds {len(raw)} bytes for shape {shape} ({dtype}), expected {expected}",
            )
            data = np.frombuffer(raw, dtype=np.dtype(dtype))
        if data is not None:
            data = densify(data, shape, t.sparsity) if t.sparsity is not None else (data.reshape(shape) if shape else data)
        q = t.quantization
        scales = np.asarray(q.scale, np.float32) if q is not None and q.scale is not None else None
        zps = np.asarray(q.zeroPoint, np.int64) if q is not None and q.zeroPoint is not None else None
        axis = int(q.quantizedDimension) if q is not None else 0
        if scales is not None and scales.size > 1:
            _check(
                0 <= axis < max(len(shape), 1) and (not shape or shape[axis] in (scales.size, -1)),
                f"tensor {i} has {scales.size} per-channel scales on axis {axis} of shape {shape}",
            )
            _check(zps is None or zps.size in (1, scales.size), f"tensor {i} has {zps.size} zero points for {scales.size} scales")
        tensors.append(
            Tensor(
                index=i,
                name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                dtype=dtype,
                shape=shape,
                data=data,
                scales=scales,
                zero_points=zps,
                quantized_dimension=axis,
                nbytes=len(raw) if raw is not None else 0,
                sparse=t.sparsity is not None,
                buffer=int(t.buffer),
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
    metadata_bytes = sum(len(_buffer_bytes(model, content, m.buffer) or b"") for m in model.metadata or [])
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(x) for x in (subgraph.inputs if subgraph.inputs is not None else ())),
        outputs=tuple(int(x) for x in (subgraph.outputs if subgraph.outputs is not None else ())),
        metadata_bytes=metadata_bytes,
    )
