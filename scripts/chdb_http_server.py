"""Development endpoint that serves part of the ClickHouse HTTP interface from chDB.

This is not a ClickHouse server, and it is never the production path: agent-ledger
writes to a real ClickHouse server in production. Development machines and CI have no
ClickHouse server, so they run this endpoint instead. It embeds chDB (the PyPI package
chdb-core 26.9.0, which is ClickHouse 26.9 as a library) and implements the requests
that the Rust `clickhouse` crate 0.15 sends:

- `GET /ping` and `GET /` without a query return `Ok.\\n`.
- The query comes from the `query` URL parameter, the request body, or the `query`
  field of a multipart/form-data body (the crate sends `Query::param` values that
  way). When the URL and the body both carry a query, the body text follows the URL
  text, as in ClickHouse.
- `INSERT ... FORMAT <name>` reads its data from the request body (any input format
  that ClickHouse reads from a file). The endpoint writes the data to a temporary
  file and runs `INSERT ... FROM INFILE`.
- `decompress=1`: the request body is in ClickHouse's native compressed block
  format (LZ4 or uncompressed blocks). Every block checksum is verified.
- `compress=1`: the response body is in that block format, compressed with LZ4.
  Otherwise `Accept-Encoding: lz4` or `gzip` compresses the response with
  `Content-Encoding` unless `enable_http_compression=0`, as ClickHouse does.
- `default_format` (output format of a query without a FORMAT clause, default
  TabSeparated), `database`, `param_<name>` (query parameters), and every other
  URL parameter as a setting of that query only. Unlike chDB, `async_insert`
  defaults to 0, the ClickHouse server default.
- Chunked and Content-Length request bodies, HTTP/1.1 keep-alive.
- Errors: HTTP 500, `Code: N. DB::Exception: ...` in the body and the header
  `X-ClickHouse-Exception-Code: N`.
- Test-only fault injection,
  `POST /__fault?fail_inserts=N&code=C[&after_commit=1][&database=D]`: the next N
  INSERT requests (into database D only, when given, so that parallel tests do not
  disturb each other) fail with exception code C (default 1002). Without
  `after_commit=1` they fail before the INSERT runs. With it the INSERT runs and
  its rows are committed, and then the request still fails, as when a server
  stores the rows but the client sees an error. `fail_inserts=0` disarms it.

Not implemented:
- Sessions. A request with `session_id` is rejected.
- Users, roles and quotas. Their parameters are ignored.
- Read-only GET requests. GET runs any query.
- Streaming. Request bodies and results are buffered whole in memory.
- zstd request blocks, progress and X-ClickHouse-Summary headers, and external
  tables in multipart bodies.

Usage: python3 chdb_http_server.py --data-dir DIR [--port 8123]
The endpoint listens on 127.0.0.1 only.
"""

import argparse
import email.parser
import email.policy
import gzip
import logging
import os
import re
import signal
import struct
import sys
import tempfile
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
import lz4.frame
from clickhouse_cityhash.cityhash import CityHash128

log = logging.getLogger("chdb_http_server")

# ClickHouse error codes, as errorCodeToName() names them in chDB 26.9.
CHECKSUM_DOESNT_MATCH = 40
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_COMPRESSION_METHOD = 89
CANNOT_DECOMPRESS = 271
UNKNOWN_EXCEPTION = 1002

# URL parameters that the HTTP interface or the crate uses and that are not
# ClickHouse settings, so they are never applied with SET.
IGNORED_PARAMETERS = {
    "buffer_size",
    "client_protocol_version",
    "close_session",
    "compress",
    "decompress",
    "password",
    "query_id",
    "quota_key",
    "role",
    "session_check",
    "session_timeout",
    "stacktrace",
    "user",
    "wait_end_of_query",
}

# Native compressed block: 16-byte checksum, then a 9-byte header (method byte,
# UInt32 size of header plus data, UInt32 uncompressed size), then the data.
CHECKSUM_SIZE = 16
BLOCK_HEADER_SIZE = 9
METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
METHOD_ZSTD = 0x90
# The default max_compress_block_size of ClickHouse 26.9 (1 MiB).
MAX_RESPONSE_BLOCK_SIZE = 1024 * 1024

SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
INSERT_STATEMENT = re.compile(r"\s*INSERT\b", re.IGNORECASE)
# An INSERT whose text ends with `FORMAT <name>`, so its data is the request body.
INSERT_FORMAT_AT_END = re.compile(
    r"(?P<head>\s*INSERT\b.*?)\bFORMAT\s+(?P<format>\w+)\s*;?\s*\Z",
    re.IGNORECASE | re.DOTALL,
)
# The FORMAT clause of an INSERT in the body that carries inline data. The data
# starts after the format name, the blanks after it and at most one line break.
INLINE_FORMAT_CLAUSE = re.compile(rb"FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.IGNORECASE)
EXCEPTION_CODE = re.compile(r"Code: (\d+)\.")


class EndpointError(Exception):
    """A request failure with the ClickHouse exception code to report."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class BadRequest(Exception):
    """A malformed HTTP request, rejected with HTTP status 400."""


def native_checksum(block):
    """Return ClickHouse's CityHash128 checksum of a compressed block as 16 bytes."""
    digest = CityHash128(block)
    # ClickHouse stores the two 64-bit halves little-endian, the half that
    # clickhouse-cityhash puts in the high bits first. test_crate_lz4_block_decodes
    # checks this against a block from the Rust crate.
    return (digest >> 64).to_bytes(8, "little") + (digest & (2**64 - 1)).to_bytes(8, "little")


def decompress_native_blocks(data):
    """Decode a request body made of ClickHouse native compressed blocks."""
    parts = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < CHECKSUM_SIZE + BLOCK_HEADER_SIZE:
            raise EndpointError(
                CANNOT_DECOMPRESS,
                f"Truncated compressed block header at byte {offset} of {len(data)}",
            )
        checksum = data[offset : offset + CHECKSUM_SIZE]
        block_start = offset + CHECKSUM_SIZE
        method = data[block_start]
        compressed_size, uncompressed_size = struct.unpack_from("<II", data, block_start + 1)
        if compressed_size < BLOCK_HEADER_SIZE or block_start + compressed_size > len(data):
            raise EndpointError(
                CANNOT_DECOMPRESS,
                f"Invalid compressed block size {compressed_size} at byte {offset}: "
                f"{len(data) - block_start} bytes remain",
            )
        block = data[block_start : block_start + compressed_size]
        expected = native_checksum(block)
        if checksum != expected:
            raise EndpointError(
                CHECKSUM_DOESNT_MATCH,
                f"Checksum doesn't match in compressed block at byte {offset}: "
                f"received {checksum.hex()}, computed {expected.hex()}. "
                "The body is corrupt or not in ClickHouse's native compressed format",
            )
        payload = block[BLOCK_HEADER_SIZE:]
        if method == METHOD_LZ4:
            try:
                parts.append(lz4.block.decompress(payload, uncompressed_size=uncompressed_size))
            except lz4.block.LZ4BlockError as error:
                raise EndpointError(
                    CANNOT_DECOMPRESS, f"Invalid LZ4 block at byte {offset}: {error}"
                ) from error
        elif method == METHOD_NONE:
            parts.append(payload)
        elif method == METHOD_ZSTD:
            raise EndpointError(
                UNKNOWN_COMPRESSION_METHOD,
                "ZSTD compressed blocks are not supported by this development endpoint; "
                "use LZ4 compression",
            )
        else:
            raise EndpointError(
                UNKNOWN_COMPRESSION_METHOD,
                f"Unknown compression method 0x{method:02x} in block at byte {offset}",
            )
        offset = block_start + compressed_size
    return b"".join(parts)


def compress_native_blocks(data):
    """Encode data as ClickHouse native compressed LZ4 blocks."""
    blocks = []
    for start in range(0, len(data), MAX_RESPONSE_BLOCK_SIZE):
        chunk = data[start : start + MAX_RESPONSE_BLOCK_SIZE]
        payload = lz4.block.compress(chunk, store_size=False)
        header = struct.pack("<BII", METHOD_LZ4, BLOCK_HEADER_SIZE + len(payload), len(chunk))
        block = header + payload
        blocks.append(native_checksum(block) + block)
    return b"".join(blocks)


def quote_string(value):
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def quote_identifier(name):
    escaped = name.replace("\\", "\\\\").replace("`", "\\`")
    return f"`{escaped}`"


def find_top_level_keyword(sql, keyword):
    """Return the index of `keyword` outside quotes and parentheses, or None."""
    depth = 0
    quote = None
    index = 0
    while index < len(sql):
        char = sql[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and sql[index : index + len(keyword)].upper() == keyword:
            before = sql[index - 1] if index else " "
            after = sql[index + len(keyword) : index + len(keyword) + 1] or " "
            if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
                return index
        index += 1
    return None


def insert_from_file_sql(head, input_format, path):
    """Rewrite `INSERT ... [SETTINGS ...] FORMAT F` to read its data from `path`.

    ClickHouse accepts a SETTINGS clause only after FROM INFILE, so FROM INFILE goes
    before a top-level SETTINGS clause of the original statement.
    """
    head = head.strip()
    from_file = f"FROM INFILE {quote_string(path)}"
    settings_at = find_top_level_keyword(head, "SETTINGS")
    if settings_at is None:
        return f"{head} {from_file} FORMAT {input_format}"
    return f"{head[:settings_at].rstrip()} {from_file} {head[settings_at:]} FORMAT {input_format}"


def split_inline_insert(body):
    """Split a body `INSERT ... FORMAT F <data>` into (head, format, data), or return None."""
    if not re.match(rb"\s*INSERT\b", body, re.IGNORECASE):
        return None
    # Latin-1 maps each byte to one character, so string indexes are byte offsets.
    # Only a FORMAT keyword outside string literals and parentheses counts.
    format_at = find_top_level_keyword(body.decode("latin-1"), "FORMAT")
    if format_at is None:
        return None
    clause = INLINE_FORMAT_CLAUSE.match(body, format_at)
    if clause is None:
        return None
    return body[:format_at], clause[1].decode("ascii"), body[clause.end() :]


def parse_multipart(content_type, body):
    """Return the form fields of a multipart/form-data body as a dict of str."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadRequest("Invalid multipart/form-data body")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            raise EndpointError(
                NOT_IMPLEMENTED,
                f"External table {name!r} in a multipart body is not supported by this "
                "development endpoint",
            )
        fields[name] = part.get_payload(decode=True).decode("utf-8")
    return fields


class Statement:
    """One request's query, settings and insert data, parsed from the HTTP request."""

    def __init__(self, sql, output_format, database, settings, params, insert_data=None):
        self.sql = sql
        self.output_format = output_format
        self.database = database
        self.settings = settings
        self.params = params
        # Body of `INSERT ... FORMAT F`, or None when the statement carries no data.
        self.insert_data = insert_data
        self.insert_format = None

    @property
    def is_insert(self):
        return INSERT_STATEMENT.match(self.sql) is not None


def parse_statement(url_parameters, content_type, body):
    """Build a Statement from URL parameters and the (decompressed) request body."""
    parameters = dict(url_parameters)
    if parameters.get("session_id"):
        raise EndpointError(
            NOT_IMPLEMENTED,
            "Sessions (session_id) are not supported by this development endpoint",
        )

    url_query = parameters.get("query", "")
    if content_type.lower().startswith("multipart/form-data"):
        fields = parse_multipart(content_type, body)
        body = fields.pop("query", "").encode("utf-8")
        parameters.update(fields)

    settings = {"async_insert": "0"}
    params = {}
    for name, value in parameters.items():
        if name.startswith("param_"):
            params[name[len("param_") :]] = value
        elif name in ("query", "database", "default_format", "session_id"):
            continue
        elif name in IGNORED_PARAMETERS:
            continue
        elif SETTING_NAME.match(name):
            settings[name] = value
        else:
            raise EndpointError(SYNTAX_ERROR, f"Invalid setting name in URL parameter {name!r}")

    statement = Statement(
        sql="",
        output_format=parameters.get("default_format") or "TabSeparated",
        database=parameters.get("database") or None,
        settings=settings,
        params=params,
    )

    insert_at_end = INSERT_FORMAT_AT_END.match(url_query)
    if url_query and insert_at_end:
        statement.sql = insert_at_end["head"]
        statement.insert_format = insert_at_end["format"]
        statement.insert_data = body
    elif url_query:
        statement.sql = url_query + ("\n" + decode_query(body) if body else "")
    else:
        inline = split_inline_insert(body)
        if inline:
            head, statement.insert_format, statement.insert_data = inline
            statement.sql = decode_query(head)
        else:
            statement.sql = decode_query(body)

    if not statement.sql.strip():
        raise EndpointError(SYNTAX_ERROR, "Empty query")
    return statement


def decode_query(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EndpointError(SYNTAX_ERROR, f"Query text is not valid UTF-8: {error}") from error


class Engine:
    """Executor of statements on the chDB engine, with one chDB connection per request.

    chdb-core 26.9 allows many connections to one data path in a process, and each
    connection keeps its own session (settings applied with SET, the current
    database). A connection per request therefore keeps each request's settings to
    that request. The anchor connection stays open so that the engine keeps running
    between requests, because chDB stops it when its last connection closes.
    """

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.anchor = chdb.connect(data_dir)

    def close(self):
        self.anchor.close()

    def run(self, statement):
        connection = chdb.connect(self.data_dir)
        try:
            if statement.settings:
                assignments = ", ".join(
                    f"{name} = {quote_string(value)}" for name, value in statement.settings.items()
                )
                connection.query(f"SET {assignments}")
            if statement.database:
                connection.query(f"USE {quote_identifier(statement.database)}")
            if statement.insert_format is None:
                return connection.query(
                    statement.sql, statement.output_format, params=statement.params
                ).bytes()
            return self._insert_from_file(connection, statement)
        finally:
            connection.close()

    def _insert_from_file(self, connection, statement):
        # No file name suffix, because FROM INFILE picks a decompression codec from it.
        with tempfile.NamedTemporaryFile(prefix="chdb-insert-") as data_file:
            data_file.write(statement.insert_data)
            data_file.flush()
            sql = insert_from_file_sql(statement.sql, statement.insert_format, data_file.name)
            return connection.query(sql, statement.output_format, params=statement.params).bytes()


ArmedFault = namedtuple("ArmedFault", ["code", "after_commit"])


class FaultInjector:
    """Test-only state behind POST /__fault: makes the next INSERT requests fail.

    Faults are armed per database (None arms one for every database), so that tests
    running in parallel against one endpoint do not overwrite each other's faults."""

    def __init__(self):
        self.lock = threading.Lock()
        self.armed = {}

    def arm(self, count, code, after_commit, database):
        with self.lock:
            if count == 0:
                self.armed.pop(database, None)
            else:
                self.armed[database] = [count, ArmedFault(code, after_commit)]

    def take(self, database):
        """Consume one armed failure for an INSERT into `database` and return it as an
        ArmedFault, or return None."""
        with self.lock:
            key = database if database in self.armed else None
            entry = self.armed.get(key)
            if entry is None:
                return None
            entry[0] -= 1
            if entry[0] == 0:
                del self.armed[key]
            return entry[1]


def injected_fault_error(fault):
    if fault.after_commit:
        when = "after the INSERT committed its rows"
    else:
        when = "before the INSERT ran"
    return EndpointError(
        fault.code, f"Fault injected by the development endpoint {when} (test-only, POST /__fault)"
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body are separate writes. With Nagle's algorithm the body
    # waits for the client's delayed ACK, which added about 40 ms per request on Linux.
    disable_nagle_algorithm = True
    server_version = "agent-ledger-chdb-dev-endpoint"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/ping" or (url.path == "/" and "query" not in dict(parse_qsl(url.query))):
            self.send_text(200, "Ok.\n")
        elif url.path == "/":
            self.handle_query(url, b"")
        else:
            self.reject(404, f"Not found: {url.path}")

    def do_POST(self):
        url = urlsplit(self.path)
        try:
            body = self.read_body()
        except BadRequest as error:
            self.close_connection = True
            self.reject(400, str(error))
            return
        if url.path == "/__fault":
            self.handle_fault(url)
        elif url.path == "/":
            self.handle_query(url, body)
        else:
            self.reject(404, f"Not found: {url.path}")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise BadRequest(f"Invalid Content-Length: {length!r}") from None
        return self.rfile.read(size)

    def read_chunked_body(self):
        # http.server does not decode Transfer-Encoding: chunked.
        chunks = []
        while True:
            size_line = self.rfile.readline(65537)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(f"Invalid chunk size line: {size_line[:40]!r}") from None
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(65537) not in (b"\r\n", b"\n"):
                raise BadRequest("Truncated chunked request body")
            chunks.append(chunk)
        # Skip trailer fields up to the blank line that ends the body.
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(chunks)

    def handle_fault(self, url):
        parameters = dict(parse_qsl(url.query))
        try:
            count = int(parameters.get("fail_inserts", "0"))
            code = int(parameters.get("code", str(UNKNOWN_EXCEPTION)))
            if count < 0 or code <= 0:
                raise ValueError
        except ValueError:
            self.reject(
                400,
                f"Invalid fault parameters {url.query!r}: expected fail_inserts=N (N >= 0), "
                "optional code=C (C > 0) and after_commit=1",
            )
            return
        after_commit = parameters.get("after_commit", "0") == "1"
        self.server.faults.arm(count, code, after_commit, parameters.get("database"))
        log.warning(
            "fault injection armed: next %d INSERT requests fail with code %d %s commit",
            count,
            code,
            "after" if after_commit else "before",
        )
        self.send_text(200, "Ok.\n")

    def handle_query(self, url, body):
        url_parameters = parse_qsl(url.query, keep_blank_values=True)
        parameters = dict(url_parameters)
        log.debug(
            "%s %s, %d body bytes, Transfer-Encoding %r, Content-Type %r, Accept-Encoding %r",
            self.command,
            self.path,
            len(body),
            self.headers.get("Transfer-Encoding"),
            self.headers.get("Content-Type"),
            self.headers.get("Accept-Encoding"),
        )
        try:
            if parameters.get("decompress") == "1" and body:
                body = decompress_native_blocks(body)
            statement = parse_statement(url_parameters, self.headers.get("Content-Type", ""), body)
            fault = self.server.faults.take(statement.database) if statement.is_insert else None
            if fault is not None and not fault.after_commit:
                raise injected_fault_error(fault)
            result = self.server.engine.run(statement)
            if fault is not None:
                raise injected_fault_error(fault)
        except BadRequest as error:
            self.reject(400, str(error))
            return
        except EndpointError as error:
            self.send_exception(error.code, f"Code: {error.code}. DB::Exception: {error}", parameters)
            return
        except chdb.ChdbError as error:
            message = str(error).strip()
            match = EXCEPTION_CODE.search(message)
            if match:
                code = int(match[1])
            else:
                code = UNKNOWN_EXCEPTION
                message = f"Code: {code}. DB::Exception: {message}"
            self.send_exception(code, message, parameters)
            return
        except Exception as error:
            # Send a 500 response instead of dropping the connection, which the
            # client would report as a network error.
            log.exception("unexpected error while handling %s", url.path)
            self.send_exception(
                UNKNOWN_EXCEPTION,
                f"Code: {UNKNOWN_EXCEPTION}. DB::Exception: Development endpoint error: {error!r}",
                parameters,
            )
            return
        self.send_result(result, parameters, statement.settings)

    def reject(self, status, message):
        log.warning("rejected %s %s with status %d: %s", self.command, self.path, status, message)
        self.send_text(status, message + "\n")

    def send_exception(self, code, message, parameters):
        log.warning(
            "query failed with code %d (query_id=%s): %s",
            code,
            parameters.get("query_id", ""),
            message,
        )
        self.send_text(500, message + "\n", {"X-ClickHouse-Exception-Code": str(code)})

    def send_result(self, result, parameters, settings):
        headers = {"Content-Type": "application/octet-stream"}
        accepted = {
            encoding.split(";")[0].strip().lower()
            for encoding in self.headers.get("Accept-Encoding", "").split(",")
        }
        if parameters.get("compress") == "1":
            result = compress_native_blocks(result)
        elif settings.get("enable_http_compression", "1") not in ("0", "false"):
            if "lz4" in accepted:
                result = lz4.frame.compress(result)
                headers["Content-Encoding"] = "lz4"
            elif "gzip" in accepted:
                result = gzip.compress(result)
                headers["Content-Encoding"] = "gzip"
        self.send_bytes(200, result, headers)

    def send_text(self, status, text, headers=None):
        all_headers = {"Content-Type": "text/plain; charset=UTF-8"}
        all_headers.update(headers or {})
        self.send_bytes(status, text.encode("utf-8"), all_headers)

    def send_bytes(self, status, body, headers):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port):
        super().__init__(("127.0.0.1", port), Handler)
        self.engine = None
        self.faults = FaultInjector()

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.info("client %s disconnected before the response was sent: %s", client_address, error)
        else:
            log.exception("error while handling a request from %s", client_address)


def main():
    parser = argparse.ArgumentParser(
        description="Development endpoint serving part of the ClickHouse HTTP interface "
        "from chDB. Not a ClickHouse server."
    )
    parser.add_argument("--data-dir", required=True, help="directory for the chDB databases")
    parser.add_argument(
        "--port", type=int, default=8123, help="TCP port on 127.0.0.1 (default: 8123)"
    )
    parser.add_argument(
        "--log-level", default="INFO", help="Python logging level (default: INFO)"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    try:
        server = Server(args.port)
    except OSError as error:
        log.error(
            "failed to listen on 127.0.0.1:%d: %s; stop the process that uses the port "
            "or choose another --port",
            args.port,
            error,
        )
        return 1
    # Requests wait in the listen backlog until serve_forever() starts.
    server.engine = Engine(data_dir)

    def stop(signum, frame):
        log.info("received signal %d, stopping", signum)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "development endpoint (chDB %s, not a ClickHouse server) listening on 127.0.0.1:%d, "
        "data in %s",
        chdb.__version__,
        args.port,
        data_dir,
    )
    server.serve_forever()
    server.server_close()
    server.engine.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
