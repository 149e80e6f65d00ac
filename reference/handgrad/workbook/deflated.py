"""A zip entry deflated while it is written, in a worker thread, then copied raw into the zip.

A long sheet's rows (the Trace while the run goes on, the Walkthrough while the other sheets are
laid out) are compressed as they come instead of all at once when the file is saved: the
deflate runs in one worker thread, which zlib lets run beside the main one (it releases the GIL
while it compresses), and :func:`write_entry` then copies the compressed bytes into the zip
with the sizes and CRC zipfile would have found.

The bytes are those zipfile writes itself: the same raw deflate stream (zipfile's
``zlib.compressobj(Z_DEFAULT_COMPRESSION, DEFLATED, -15)`` fed the same bytes: the stream does
not depend on how its input is cut into pieces), and zipfile still writes every header, the
zip64 extra fields and the central directory. Only the compressing is done here: the entry is
opened with :meth:`zipfile.ZipFile.open` as any other, and its writer is handed the compressed
bytes, the size and the CRC instead of compressing them again. Where that writer does not look
as expected (another Python's zipfile) the stream is inflated and written the ordinary way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

ZIP_LEVEL = zlib.Z_DEFAULT_COMPRESSION  # zipfile's level for ZIP_DEFLATED without compresslevel
IN_FLIGHT = 4  # pieces queued for the worker at most: memory stays flat if it falls behind
CHUNK = 1 << 20

_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, worker): a forked child starts its own


def _worker() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="handgrad-deflate"))
        return _pool[1]


class DeflatedStream:
    """The raw deflate stream of an entry's bytes (``head`` first), in an unnamed temporary file.

    :meth:`add` queues bytes for the worker (one worker for every stream: each stream's pieces
    are compressed in the order they were added); :meth:`finish` waits for them and ends the
    stream. ``size`` and ``crc`` are those of the uncompressed bytes, ``compressed_size`` that of
    the stream.
    """

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="handgrad-deflate-")
        self.size = 0
        self.crc = 0
        self.compressed_size = 0
        self._compressor = zlib.compressobj(ZIP_LEVEL, zlib.DEFLATED, -15)
        self._queued: deque[Future[None]] = deque()
        self._finished = False
        self.add(head)

    def add(self, data: bytes) -> None:
        if self._finished:
            raise ValueError("bytes added to a finished deflate stream")
        if not data:
            return
        self.size += len(data)
        self._queued.append(_worker().submit(self._compress, data))
        while len(self._queued) > IN_FLIGHT:
            self._queued.popleft().result()

    def _compress(self, data: bytes) -> None:
        """In the worker: CRC and deflate one piece (both release the GIL on large pieces)."""
        self.crc = zlib.crc32(data, self.crc)
        out = self._compressor.compress(data)
        self.compressed_size += len(out)
        self.file.write(out)

    def _end(self) -> None:
        out = self._compressor.flush()
        self.compressed_size += len(out)
        self.file.write(out)
        self.file.flush()

    def finish(self) -> None:
        """Wait for every queued piece and end the stream (no bytes can be added after)."""
        if self._finished:
            return
        self._queued.append(_worker().submit(self._end))
        self._wait()
        self._finished = True

    def _wait(self) -> None:
        while self._queued:
            self._queued.popleft().result()

    def continuation(self) -> Continuation:
        """The stream continued from where it stands, into a file of its own (for bytes that come
        from a forked child: :mod:`handgrad.workbook.forked_rows`); :meth:`adopt` appends it.
        Waits for the queued pieces: call it while nothing else adds to the stream."""
        if self._finished:
            raise ValueError("a finished deflate stream cannot be continued")
        self._wait()
        return Continuation(self._compressor.copy(), self.crc)

    def adopt(self, continuation: Continuation) -> None:
        """Append what ``continuation`` compressed (nothing may have been added to the stream since
        it was made): the stream then stands where the continuation ends."""
        self._wait()
        continuation.file.seek(0)
        shutil.copyfileobj(continuation.file, self.file, CHUNK)
        self._compressor = continuation.compressor
        self.crc = continuation.crc
        self.size += continuation.size
        self.compressed_size += continuation.compressed_size
        continuation.close()

    def copy_to(self, out: IO[bytes]) -> None:
        """The compressed stream (after :meth:`finish`) onto ``out``."""
        self.file.seek(0)
        shutil.copyfileobj(self.file, out, CHUNK)

    def inflated(self, skip: int = 0) -> Iterator[bytes]:
        """The uncompressed bytes back (after :meth:`finish`), without their first ``skip``."""
        self.file.seek(0)
        inflater = zlib.decompressobj(-15)
        while chunk := self.file.read(CHUNK):
            data = inflater.decompress(chunk)
            if skip:
                cut = min(skip, len(data))
                data, skip = data[cut:], skip - cut
            if data:
                yield data
        if rest := inflater.flush():
            yield rest[skip:]

    def close(self) -> None:
        """Drop the stream (safe to call twice; pieces not yet compressed are dropped)."""
        while self._queued:
            queued = self._queued.popleft()
            if not queued.cancel():
                try:
                    queued.result()
                except Exception:  # closing after a failure: the failure was reported where it happened
                    pass
        self.file.close()


class Continuation:
    """A deflate stream continued from a copy of its compressor, into an unnamed temporary file:
    the bytes of a forked child compressed as they come (in the thread that reads them), adopted
    by the stream (:meth:`DeflatedStream.adopt`) once the child has succeeded, or dropped."""

    def __init__(self, compressor: zlib._Compress, crc: int) -> None:
        self.compressor = compressor
        self.crc = crc
        self.size = 0
        self.compressed_size = 0
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="handgrad-deflate-")

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)
        out = self.compressor.compress(data)
        self.compressed_size += len(out)
        self.file.write(out)

    def close(self) -> None:
        self.file.close()


class _NothingLeft:
    """Stands in for zipfile's compressor once the compressed bytes are written: nothing to flush."""

    @staticmethod
    def flush() -> bytes:
        return b""


_WRITER_FIELDS = ("_compressor", "_file_size", "_crc", "_compress_size", "_fileobj")


def write_entry(target: zipfile.ZipFile, info: zipfile.ZipInfo, stream: DeflatedStream) -> None:
    """Write a finished ``stream`` as the deflated entry ``info`` (``info.file_size`` set to the
    stream's size, as for any entry whose size is known: zipfile chooses zip64 by it)."""
    if info.compress_type != zipfile.ZIP_DEFLATED or getattr(info, "_compresslevel", None) is not None:
        raise ValueError("a deflate stream is written as a ZIP_DEFLATED entry at the default level")
    with target.open(info, "w") as out:
        if not all(hasattr(out, name) for name in _WRITER_FIELDS):
            for data in stream.inflated():
                out.write(data)
            return
        # what zipfile's entry writer would hold after compressing the stream's bytes itself
        out._compressor = _NothingLeft()  # type: ignore[attr-defined]
        stream.copy_to(out._fileobj)  # type: ignore[attr-defined]
        out._file_size = stream.size  # type: ignore[attr-defined]
        out._crc = stream.crc  # type: ignore[attr-defined]
        out._compress_size = stream.compressed_size  # type: ignore[attr-defined]
