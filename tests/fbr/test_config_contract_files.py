"""Book-file contracts read from files and the first margin bracket (review findings): an error in
a value read with spec_from names the contract's spec_from, the file and the column (never
[contract_defaults], which the book did not write); an empty, NaN or non-numeric spec cell is
refused, not replaced by fbr's default; the first bracket's cum must be 0 (MM is 0 at notional 0),
inline and in a tiers_from file. No network; every input is written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config import LoadedBook, load_book_file
from models.errors import ValidationError

BOOK = """
[book]
cash = 3000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 0.1
ETH = 1.0
[contract_defaults]
leverage = 10
{defaults_extra}
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
{btc_extra}
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.55
ETH = 0.70
"""

SPEC_HEADER = ("symbol", "baseAsset", "quoteAsset", "marginAsset", "lot_stepSize", "lot_minQty",
               "lot_maxQty", "minNotional", "tickSize")
#: Binance's BTCUSDT perpetual: lot 0.001, min qty 0.001, max 1000, min notional 100 USD, tick 0.1.
SPEC_ROW = {"symbol": "BTCUSDT", "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT",
            "lot_stepSize": "0.001", "lot_minQty": "0.001", "lot_maxQty": "1000",
            "minNotional": "100", "tickSize": "0.1"}
SPEC_REF = '{ file = "specs.csv", symbol = "BTC/USDT:USDT" }'
TIERS_HEADER = ("symbol,min_notional,max_notional,maintenance_margin_rate,max_leverage,"
                "maint_amount_cum\n")


def spec_file(tmp_path: Path, drop: str | None = None, **cells: str) -> Path:
    """specs.csv with the BTCUSDT row, ``cells`` replaced and column ``drop`` left out."""
    header = [c for c in SPEC_HEADER if c != drop]
    row = {**SPEC_ROW, **cells}
    path = tmp_path / "specs.csv"
    path.write_text(",".join(header) + "\n" + ",".join(row[c] for c in header) + "\n",
                    encoding="utf-8")
    return path


def book(tmp_path: Path, btc_extra: str = "", defaults_extra: str = "") -> Path:
    path = tmp_path / "book.toml"
    path.write_text(BOOK.format(btc_extra=btc_extra, defaults_extra=defaults_extra),
                    encoding="utf-8")
    return path


def load(path: Path) -> LoadedBook:
    return load_book_file(path)


def refusal(path: Path) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        load(path)
    assert "Fix:" in str(info.value)
    return info.value


# --- 1. an error in a spec_from value names the contract's spec_from, file and column ------------

def test_spec_from_values_load(tmp_path: Path) -> None:
    """A well-formed spec row gives the contract the exchange's rules (min notional 100 USD)."""
    spec_file(tmp_path)
    btc = load(book(tmp_path, f"spec_from = {SPEC_REF}")).book.contracts[0]
    assert (btc.lot_step, btc.min_qty, btc.max_qty, btc.min_notional, btc.tick) == (
        0.001, 0.001, 1000.0, 100.0, 0.1)


def test_bad_spec_value_names_the_contracts_spec_from_file_and_column(tmp_path: Path) -> None:
    """lot_minQty = -0.001 in the spec file of contracts[0]: the error names
    "contracts[0].spec_from (specs.csv: lot_minQty)", not "contract_defaults.min_qty", a key the
    book never wrote."""
    spec_file(tmp_path, lot_minQty="-0.001")
    err = refusal(book(tmp_path, f"spec_from = {SPEC_REF}"))
    assert err.field == "contracts[0].spec_from (specs.csv: lot_minQty)", str(err)
    assert "contract_defaults" not in str(err)
    assert "-0.001" in err.problem


def test_spec_from_in_contract_defaults_names_contract_defaults(tmp_path: Path) -> None:
    """spec_from written under [contract_defaults]: the error names that spec_from (the key the
    book wrote), with the file and column."""
    spec_file(tmp_path, lot_minQty="-0.001")
    err = refusal(book(tmp_path, defaults_extra=f"spec_from = {SPEC_REF}"))
    assert err.field == "contract_defaults.spec_from (specs.csv: lot_minQty)", str(err)


def test_a_key_written_in_the_book_is_still_named_as_written(tmp_path: Path) -> None:
    """A bad min_qty written on the contract (it wins over the file) is named contracts[0].min_qty."""
    spec_file(tmp_path)
    err = refusal(book(tmp_path, f"spec_from = {SPEC_REF}\nmin_qty = -1.0"))
    assert err.field == "contracts[0].min_qty", str(err)


# --- 2. an empty, NaN or non-numeric spec cell is refused, not defaulted ------------------------

@pytest.mark.parametrize(("column", "value"), [
    ("minNotional", ""), ("lot_minQty", "nan"), ("tickSize", "abc"), ("lot_maxQty", "inf")])
def test_bad_spec_cell_is_refused_naming_file_and_column(tmp_path: Path, column: str,
                                                         value: str) -> None:
    """An empty minNotional cell used to become fbr's default 5 USD (Binance's is 100), nan
    lot_minQty the default 0: a present cell that is empty, NaN or not a finite number is refused,
    naming the spec_from, the file and the column."""
    path = spec_file(tmp_path, **{column: value})
    err = refusal(book(tmp_path, f"spec_from = {SPEC_REF}"))
    msg = str(err)
    assert err.field == "contracts[0].spec_from", msg
    assert str(path) in msg and repr(column) in msg and "BTCUSDT" in msg, msg


def test_a_column_the_spec_file_lacks_is_left_out(tmp_path: Path) -> None:
    """A spec file without a minNotional column leaves min_notional out: the book's default
    (5 USD) applies, as the README says."""
    spec_file(tmp_path, drop="minNotional")
    btc = load(book(tmp_path, f"spec_from = {SPEC_REF}")).book.contracts[0]
    assert btc.min_notional == 5.0 and btc.lot_step == 0.001


# --- 3. the first bracket's cum is 0 -------------------------------------------------------------

INLINE_TIERS = ("tiers = [ {{ max_notional = 50000, max_leverage = 125, mmr = 0.004, "
                "cum = {cum} }}, {{ max_notional = inf, max_leverage = 100, mmr = 0.005 }} ]")


def test_first_inline_bracket_cum_other_than_zero_is_refused(tmp_path: Path) -> None:
    """cum = -1000 on the first bracket: MM(n) = 0.004 n + 1000, so a $100 position would need
    $1,000.40 of maintenance margin (by hand 0.004 x 100 = $0.40). Refused naming
    contracts[0].tiers[0].cum with the fix "set cum = 0"."""
    err = refusal(book(tmp_path, INLINE_TIERS.format(cum=-1000)))
    assert err.field == "contracts[0].tiers[0].cum", str(err)
    assert "+1000 USD at notional 0" in err.problem
    assert err.fix.startswith("set cum = 0")


def test_first_inline_bracket_cum_within_tolerance_loads(tmp_path: Path) -> None:
    """cum = 0.005 (half a cent, within MM_JUMP_TOL_USD) and cum = 0 load; MM($100) = 0.40."""
    for cum in ("0.005", "0"):
        tiers = load(book(tmp_path, INLINE_TIERS.format(cum=cum))).book.contracts[0].tiers
        assert float(tiers.maintenance(100.0)) == pytest.approx(0.40, abs=0.006)


def test_first_file_bracket_cum_other_than_zero_is_refused(tmp_path: Path) -> None:
    """A tiers_from file whose first row has maint_amount_cum = -1000 (MM = 1000 USD with no
    position) is refused naming the tiers_from, the file, and the fix maint_amount_cum = 0."""
    path = tmp_path / "tiers.csv"
    path.write_text(TIERS_HEADER + "BTC/USDT:USDT,0,50000,0.004,125,-1000\n"
                    "BTC/USDT:USDT,50000,1000000,0.005,100,-950\n", encoding="utf-8")
    err = refusal(book(tmp_path, 'tiers_from = { file = "tiers.csv", symbol = "BTC/USDT:USDT" }'))
    msg = str(err)
    assert err.field == "contracts[0].tiers_from", msg
    assert str(path) in msg and "first bracket" in msg and "+1,000.00 USD at notional 0" in msg
    assert "set maint_amount_cum = 0 in that row" in err.fix


def test_first_file_bracket_cum_zero_loads(tmp_path: Path) -> None:
    """The exchange's own layout (first cum 0, then continuous 50) loads."""
    path = tmp_path / "tiers.csv"
    path.write_text(TIERS_HEADER + "BTC/USDT:USDT,0,50000,0.004,125,0\n"
                    "BTC/USDT:USDT,50000,1000000,0.005,100,50\n", encoding="utf-8")
    lb = load(book(tmp_path, 'tiers_from = { file = "tiers.csv", symbol = "BTC/USDT:USDT" }'))
    assert float(lb.book.contracts[0].tiers.maintenance(100.0)) == pytest.approx(0.40)


def _spec_with_market_cap(tmp_path: Path, mkt_max: str) -> Path:
    """specs.csv whose BTCUSDT row also has Binance's MARKET_LOT_SIZE columns."""
    header = (*SPEC_HEADER, "mkt_stepSize", "mkt_minQty", "mkt_maxQty")
    row = {**SPEC_ROW, "mkt_stepSize": "0.001", "mkt_minQty": "0.001", "mkt_maxQty": mkt_max}
    path = tmp_path / "specs.csv"
    path.write_text(",".join(header) + "\n" + ",".join(row[c] for c in header) + "\n",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize(("mkt_max", "expected"), [("120", 120.0), ("5000", 1000.0)])
def test_the_contracts_max_qty_is_the_smaller_of_the_lot_and_market_order_caps(
        tmp_path: Path, mkt_max: str, expected: float) -> None:
    """Binance checks a market order (fbr's default) against MARKET_LOT_SIZE maxQty (mkt_maxQty,
    -4005 above it), a limit order against LOT_SIZE maxQty (lot_maxQty 1000): one cap serves both
    order types, min(1000, mkt_maxQty), as the exchange path takes it
    (executor.ccxt_metadata._max_qty), so the book-file plan splits as the exchange path does."""
    _spec_with_market_cap(tmp_path, mkt_max)
    lb = load(book(tmp_path, btc_extra=f"spec_from = {SPEC_REF}"))
    btc = next(c for c in lb.book.contracts if c.symbol == "BTC-PERP")
    assert btc.max_qty == expected


def test_the_files_facts_win_over_contract_defaults_and_the_row_over_the_file(tmp_path: Path) -> None:
    """Generic [contract_defaults] (the seed examples' lot 1e-8 and min notional 0) gave a contract
    with spec_from a step the exchange refuses; the file's exchange facts win over the defaults, a
    key the contract's own row writes wins over the file, and the defaults fill what the file
    lacks (no tickSize column here: the default tick 0.5)."""
    spec_file(tmp_path, drop="tickSize")
    generic = "lot_step = 1e-8\nmin_notional = 0.0\ntick = 0.5"
    btc = load(book(tmp_path, f"spec_from = {SPEC_REF}", defaults_extra=generic)).book.contracts[0]
    assert (btc.lot_step, btc.min_notional, btc.tick) == (0.001, 100.0, 0.5)
    own = load(book(tmp_path, f"spec_from = {SPEC_REF}\nmin_notional = 5.0",
                    defaults_extra=generic)).book.contracts[0]
    assert (own.lot_step, own.min_notional) == (0.001, 5.0)
