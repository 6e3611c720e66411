"""Tests for scripts/chdb_http_server.py, the development ClickHouse endpoint.

Each run starts the endpoint on a free port of 127.0.0.1 with its data in a temporary
directory. Run it with the endpoint's virtualenv, which scripts/embedded-clickhouse
creates:

    .data/venv/bin/python scripts/test_chdb_http_server.py
"""

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import lz4.frame

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS_DIR)
import chdb_http_server  # noqa: E402

# Output of clickhouse::_priv::lz4_compress(b"hello hello hello hello") from the Rust
# `clickhouse` crate 0.15.3: one native block, LZ4 method, CityHash128 checksum.
CRATE_LZ4_BLOCK = bytes.fromhex(
    "caeaf61c2bc8743a6e9cff7db288d0e18219000000170000006768656c6c6f200600602068656c6c6f"
)


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(text):
    raw = text.encode("utf-8")
    return encode_varint(len(raw)) + raw


def encode_row(number, text):
    """Encode one (UInt64, String) row in RowBinary."""
    return struct.pack("<Q", number) + encode_string(text)


class Reader:
    def __init__(self, data):
        self.data = data
        self.offset = 0

    def varint(self):
        value = 0
        shift = 0
        while True:
            byte = self.data[self.offset]
            self.offset += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self):
        size = self.varint()
        text = self.data[self.offset : self.offset + size].decode("utf-8")
        self.offset += size
        return text

    def uint64(self):
        (value,) = struct.unpack_from("<Q", self.data, self.offset)
        self.offset += 8
        return value

    def at_end(self):
        return self.offset == len(self.data)


def decode_rbwnat(data):
    """Decode RowBinaryWithNamesAndTypes with UInt64 and String columns."""
    reader = Reader(data)
    count = reader.varint()
    names = [reader.string() for _ in range(count)]
    types = [reader.string() for _ in range(count)]
    readers = {"UInt64": reader.uint64, "String": reader.string}
    rows = []
    while not reader.at_end():
        rows.append(tuple(readers[column_type]() for column_type in types))
    return names, types, rows


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart_body(boundary, fields):
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode("utf-8")


class EndpointTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.temp_dir = tempfile.TemporaryDirectory(prefix="chdb-endpoint-test-")
        cls.port = free_port()
        cls.log_path = os.path.join(cls.temp_dir.name, "endpoint.log")
        cls.log_file = open(cls.log_path, "wb")
        cls.process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(SCRIPTS_DIR, "chdb_http_server.py"),
                "--data-dir",
                os.path.join(cls.temp_dir.name, "data"),
                "--port",
                str(cls.port),
            ],
            stdout=cls.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = cls.request(method="GET", path="/ping")
                if status == 200 and body == b"Ok.\n":
                    break
            except OSError:
                pass
            if cls.process.poll() is not None or time.monotonic() > deadline:
                with open(cls.log_path, encoding="utf-8", errors="replace") as log_file:
                    log_text = log_file.read()
                cls.tearDownClass()
                raise RuntimeError(f"endpoint did not respond to GET /ping; its log:\n{log_text}")
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.process.terminate()
        cls.process.wait(timeout=30)
        cls.log_file.close()
        cls.temp_dir.cleanup()

    @classmethod
    def request(cls, params=None, body=None, headers=None, method="POST", path="/", chunks=None):
        """Send one request and return (status, headers, body).

        With `chunks` the body is sent with Transfer-Encoding: chunked.
        """
        connection = http.client.HTTPConnection("127.0.0.1", cls.port, timeout=60)
        url = path + ("?" + urlencode(params) if params else "")
        try:
            if chunks is not None:
                connection.request(
                    method, url, body=iter(chunks), headers=headers or {}, encode_chunked=True
                )
            else:
                connection.request(method, url, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def query(self, sql, **params):
        status, _, body = self.request({"query": sql, **params})
        self.assertEqual(status, 200, body.decode(errors="replace"))
        return body

    def assert_exception(self, response, code):
        status, headers, body = response
        self.assertEqual(status, 500, body)
        self.assertEqual(headers["X-ClickHouse-Exception-Code"], str(code))
        self.assertTrue(body.startswith(f"Code: {code}. DB::Exception:".encode()), body)

    def test_ping(self):
        for path in ("/ping", "/"):
            status, _, body = self.request(method="GET", path=path)
            self.assertEqual(status, 200, path)
            self.assertEqual(body, b"Ok.\n", path)

    def test_crate_lz4_block_decodes(self):
        decoded = chdb_http_server.decompress_native_blocks(CRATE_LZ4_BLOCK)
        self.assertEqual(decoded, b"hello hello hello hello")

    def test_rowbinary_chunked_compressed_insert(self):
        self.query("CREATE TABLE rb (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
        rows = [(i, f"name-{i}-" + "x" * (i % 50)) for i in range(3000)]
        raw = b"".join(encode_row(*row) for row in rows)
        # Three native blocks, each split across several HTTP chunks.
        blocks = b"".join(
            chdb_http_server.compress_native_blocks(raw[start : start + 40000])
            for start in range(0, len(raw), 40000)
        )
        chunks = [blocks[start : start + 7000] for start in range(0, len(blocks), 7000)]
        status, _, body = self.request(
            {"query": "INSERT INTO rb (id, name) FORMAT RowBinary", "decompress": "1"},
            chunks=chunks,
        )
        self.assertEqual(status, 200, body)

        status, headers, body = self.request(
            {"default_format": "RowBinaryWithNamesAndTypes", "compress": "1"},
            body=b"SELECT id, name FROM rb ORDER BY id",
        )
        self.assertEqual(status, 200, body)
        self.assertIsNone(headers["Content-Encoding"])
        names, types, decoded = decode_rbwnat(chdb_http_server.decompress_native_blocks(body))
        self.assertEqual(names, ["id", "name"])
        self.assertEqual(types, ["UInt64", "String"])
        self.assertEqual(decoded, rows)

    def test_accept_encoding_lz4_response(self):
        status, headers, body = self.request(
            {"default_format": "RowBinaryWithNamesAndTypes"},
            body=b"SELECT toUInt64(number) AS n FROM numbers(3)",
            headers={"Accept-Encoding": "lz4"},
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["Content-Encoding"], "lz4")
        _, _, rows = decode_rbwnat(lz4.frame.decompress(body))
        self.assertEqual(rows, [(0,), (1,), (2,)])

    def test_bad_checksum_rejected(self):
        block = bytearray(chdb_http_server.compress_native_blocks(b"1\tone\n"))
        block[0] ^= 0xFF
        response = self.request(
            {"query": "INSERT INTO bad_checksum FORMAT TabSeparated", "decompress": "1"},
            body=bytes(block),
        )
        self.assert_exception(response, chdb_http_server.CHECKSUM_DOESNT_MATCH)
        self.assertIn(b"Checksum doesn't match", response[2])

    def test_jsoneachrow_and_tsv_inserts(self):
        self.query("CREATE TABLE text_rows (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
        status, _, body = self.request(
            {"query": "INSERT INTO text_rows FORMAT JSONEachRow"},
            body=b'{"id": 1, "name": "one"}\n{"id": 2, "name": "two"}\n',
        )
        self.assertEqual(status, 200, body)
        status, _, body = self.request(
            {"query": "INSERT INTO text_rows (id, name) FORMAT TabSeparated"},
            body=b"3\tthree\n",
        )
        self.assertEqual(status, 200, body)
        status, _, body = self.request(body=b"INSERT INTO text_rows FORMAT TabSeparated\n4\tfour\n")
        self.assertEqual(status, 200, body)
        status, _, body = self.request({"query": "INSERT INTO text_rows VALUES"}, body=b"(5, 'five')")
        self.assertEqual(status, 200, body)
        # FORMAT inside a string literal does not start inline data.
        status, _, body = self.request(body=b"INSERT INTO text_rows VALUES (6, 'FORMAT JSON\n')")
        self.assertEqual(status, 200, body)

        result = self.query("SELECT id, name FROM text_rows ORDER BY id FORMAT JSONEachRow")
        self.assertEqual(
            [json.loads(line) for line in result.splitlines()],
            [
                {"id": 1, "name": "one"},
                {"id": 2, "name": "two"},
                {"id": 3, "name": "three"},
                {"id": 4, "name": "four"},
                {"id": 5, "name": "five"},
                {"id": 6, "name": "FORMAT JSON\n"},
            ],
        )

    def test_param_binding(self):
        value = "it's a \\ test"
        escaped = value.replace("\\", "\\\\")
        result = self.query(
            "SELECT {text:String} AS text, {n:UInt64} + 1 AS n FORMAT JSONEachRow",
            param_text=escaped,
            param_n="41",
        )
        self.assertEqual(json.loads(result), {"text": value, "n": 42})

        boundary = "test-boundary-1234"
        status, _, body = self.request(
            {"default_format": "JSONEachRow"},
            body=multipart_body(boundary, {"query": "SELECT {id:String} AS id", "param_id": "ev-7"}),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"id": "ev-7"})

    def test_describe_table(self):
        self.query("CREATE TABLE described (id UInt64, name String DEFAULT 'x') ENGINE = Memory")
        status, _, body = self.request(
            {"default_format": "RowBinaryWithNamesAndTypes", "describe_include_subcolumns": "0"},
            body=b"DESCRIBE TABLE described",
        )
        self.assertEqual(status, 200, body)
        reader = Reader(body)
        count = reader.varint()
        names = [reader.string() for _ in range(count)]
        types = [reader.string() for _ in range(count)]
        self.assertEqual(names[:3], ["name", "type", "default_type"])
        self.assertTrue(all(column_type == "String" for column_type in types), types)
        columns = []
        while not reader.at_end():
            columns.append([reader.string() for _ in range(count)][:4])
        self.assertEqual(
            columns, [["id", "UInt64", "", ""], ["name", "String", "DEFAULT", "'x'"]]
        )

    def test_database_parameter(self):
        self.query("CREATE DATABASE IF NOT EXISTS other")
        self.assertEqual(self.query("SELECT currentDatabase()", database="other"), b"other\n")
        self.assertEqual(self.query("SELECT currentDatabase()"), b"default\n")
        self.assert_exception(self.request({"query": "SELECT 1", "database": "missing"}), 81)

    def test_error_status_and_header(self):
        response = self.request(body=b"SELEC 1")
        self.assert_exception(response, 62)
        response = self.request({"query": "SELECT 1", "no_such_setting": "1"})
        self.assert_exception(response, 115)

    def test_settings_stay_per_request(self):
        def limited():
            return self.request(
                {"max_result_rows": "1", "result_overflow_mode": "throw"},
                body=b"SELECT number FROM numbers(5)",
            )

        def plain():
            return self.request(body=b"SELECT getSetting('max_result_rows'), count() FROM numbers(5)")

        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(limited if i % 2 else plain) for i in range(60)]
            results = [(i % 2, future.result()) for i, future in enumerate(futures)]
        for is_limited, response in results:
            if is_limited:
                self.assert_exception(response, 396)
            else:
                self.assertEqual(response[0], 200, response[2])
                self.assertEqual(response[2], b"0\t5\n")

    def test_async_insert_defaults_off(self):
        self.assertEqual(self.query("SELECT getSetting('async_insert')"), b"false\n")
        self.assertEqual(self.query("SELECT getSetting('async_insert')", async_insert="1"), b"true\n")

    def test_deduplication_token(self):
        self.query(
            "CREATE TABLE dedup (id UInt64, name String) ENGINE = MergeTree ORDER BY id "
            "SETTINGS non_replicated_deduplication_window = 100"
        )
        rows = b'{"id": 1, "name": "a"}\n'
        for _ in range(2):
            status, _, body = self.request(
                {"query": "INSERT INTO dedup FORMAT JSONEachRow", "insert_deduplication_token": "t1"},
                body=rows,
            )
            self.assertEqual(status, 200, body)
        self.assertEqual(self.query("SELECT count() FROM dedup"), b"1\n")

        # A SETTINGS clause in the query text works too, and a new token inserts again.
        for _ in range(2):
            status, _, body = self.request(
                {
                    "query": "INSERT INTO dedup (id, name) "
                    "SETTINGS insert_deduplication_token = 't2' FORMAT JSONEachRow"
                },
                body=rows,
            )
            self.assertEqual(status, 200, body)
        self.assertEqual(self.query("SELECT count() FROM dedup"), b"2\n")

    def test_fault_injection(self):
        self.query("CREATE TABLE faults (id UInt64) ENGINE = MergeTree ORDER BY id")

        def insert(row_id):
            return self.request(
                {"query": "INSERT INTO faults FORMAT TabSeparated"}, body=f"{row_id}\n".encode()
            )

        status, _, _ = self.request({"fail_inserts": "1", "code": "242"}, path="/__fault")
        self.assertEqual(status, 200)
        self.query("SELECT 1")  # Only INSERT requests consume the armed failure.
        self.assert_exception(insert(1), 242)
        self.assertEqual(self.query("SELECT count() FROM faults WHERE id = 1"), b"0\n")

        status, _, _ = self.request(
            {"fail_inserts": "2", "code": "210", "after_commit": "1"}, path="/__fault"
        )
        self.assertEqual(status, 200)
        self.assert_exception(insert(2), 210)
        self.assert_exception(insert(3), 210)
        self.assertEqual(self.query("SELECT count() FROM faults WHERE id IN (2, 3)"), b"2\n")

        status, _, body = insert(4)
        self.assertEqual(status, 200, body)

        status, _, _ = self.request({"fail_inserts": "-1"}, path="/__fault")
        self.assertEqual(status, 400)

    def test_session_id_rejected(self):
        response = self.request({"query": "SELECT 1", "session_id": "s1"})
        self.assert_exception(response, chdb_http_server.NOT_IMPLEMENTED)

    def test_keep_alive_connection(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            for number in range(3):
                connection.request("POST", "/", body=f"SELECT {number}".encode())
                response = connection.getresponse()
                self.assertEqual(response.read(), f"{number}\n".encode())
        finally:
            connection.close()


if __name__ == "__main__":
    unittest.main()
