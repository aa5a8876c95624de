"""A canary API key and secret never reach logs, stdout/stderr, the journal, errors or JSON."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator, Fault
from exec_helpers import SEED_BOOK, cli_emulator
from typer.testing import CliRunner

from executor.safety import Credentials, RedactingFilter, load_credentials, redact
from fbr import execute_wiring
from fbr.cli import app

CANARY_KEY = "canaryKEYq7Wm2xR9vT4pL8sN3bH6"
CANARY_SECRET = "canarySECRETz5Kd1jF0gY7cQ2eU9aI4"
runner = CliRunner()


@pytest.fixture
def canary_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    with cli_emulator(monkeypatch, CANARY_KEY, CANARY_SECRET) as emu:
        yield emu


def _assert_clean(text: str, where: str) -> None:
    assert CANARY_KEY not in text, f"API key leaked into {where}"
    assert CANARY_SECRET not in text, f"secret leaked into {where}"


def test_no_secret_anywhere_after_a_full_run(canary_emulator: BinanceEmulator, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    journal = tmp_path / "j.sqlite"
    outputs: list[str] = []
    canary_emulator.inject(Fault.TIMEOUT_AFTER_ACCEPT, path="/fapi/v1/order", method="POST",
                           delay_s=1.0)
    canary_emulator.inject(Fault.HTTP_429, path="/fapi/v1/order", method="POST")
    for args in (["execute", str(SEED_BOOK), "--exchange", "binanceusdm"],
                 ["execute", str(SEED_BOOK), "--exchange", "binanceusdm", "--live"],
                 ["execute", str(SEED_BOOK), "--exchange", "binanceusdm", "--live", "--json"],
                 ["status", str(SEED_BOOK), "--exchange", "binanceusdm"],
                 ["status", str(SEED_BOOK), "--exchange", "binanceusdm", "--json"]):
        res = runner.invoke(app, [*args, "--journal", str(journal)])
        assert res.exit_code == 0, res.output
        outputs += [res.stdout, res.stderr]
    # the run did trade (two legs hit faults and were reconciled: warnings were logged)
    assert len(canary_emulator.orders) >= 3
    assert any("reconciling" in r.getMessage() for r in caplog.records)
    _assert_clean("\n".join(outputs), "stdout/stderr")
    _assert_clean(caplog.text, "logs")
    _assert_clean("\n".join(r.getMessage() for r in caplog.records), "log records")
    files = sorted(tmp_path.glob("j.sqlite*"))
    assert files
    for f in files:  # the database and its WAL/SHM side files, as raw bytes
        data = f.read_bytes()
        assert CANARY_KEY.encode() not in data and CANARY_SECRET.encode() not in data, f


def test_no_secret_in_errors(canary_emulator: BinanceEmulator, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # the exchange refuses the keys (another account): an authentication error, one message
    other = BinanceEmulator(api_key="someone-else", secret="not-ours").start()
    try:
        monkeypatch.setitem(execute_wiring.EXCHANGE_FACTORIES, "binanceusdm",
                            lambda c: other.exchange(api_key=c.api_key, secret=c.secret, timeout=400))
        for json_flag in ([], ["--json"]):
            res = runner.invoke(app, ["execute", str(SEED_BOOK), "--exchange", "binanceusdm", "--live",
                                      "--journal", str(tmp_path / "j.sqlite"), *json_flag])
            assert res.exit_code == 2
            assert "AuthenticationError" in res.stderr
            _assert_clean(res.stdout + res.stderr, "error output")
    finally:
        other.stop()
    _assert_clean(caplog.text, "logs")
    # an error whose text carries the secret (say an exchange echoing it) is scrubbed
    load_credentials("binanceusdm")
    assert redact(f"bad signature for {CANARY_SECRET}") == "bad signature for ***"


def test_credentials_and_log_records_hide_the_values(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FBR_TESTX_API_KEY", CANARY_KEY)
    monkeypatch.setenv("FBR_TESTX_SECRET", CANARY_SECRET)
    creds = load_credentials("testx")
    assert creds.api_key == CANARY_KEY
    _assert_clean(repr(creds) + str(creds), "repr")
    from executor.safety import install_log_redaction

    install_log_redaction()
    caplog.set_level(logging.INFO)
    logging.getLogger("some.library").info("headers %s", {"X-MBX-APIKEY": CANARY_KEY})
    _assert_clean(caplog.text, "logs")
    assert "***" in caplog.text
    record = logging.LogRecord("x", logging.INFO, "f", 1, "secret=%s", (CANARY_SECRET,), None)
    assert RedactingFilter().filter(record) and CANARY_SECRET not in record.getMessage()
    assert Credentials("a", "b") != Credentials("a", "c")


def test_a_request_signature_in_an_exchange_error_is_never_shown() -> None:
    """ccxt's message for a signed request's plain-text error carries its URL, signature
    included (valid for its recvWindow): redact scrubs the value, whatever keys are registered."""
    from executor.safety import redact

    text = ("binanceusdm GET https://fapi.binance.com/fapi/v1/income?timestamp=1&recvWindow=10000"
            "&signature=37d4e0aa9b1f54 401 Unauthorized")
    assert redact(text) == text.replace("37d4e0aa9b1f54", "***")
    assert redact('{"url": "...&Signature=ab12"}') == '{"url": "...&Signature=***"}'
