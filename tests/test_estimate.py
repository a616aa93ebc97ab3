"""`livestream estimate` against figures worked out by hand.

Worked example (10 viewers, 2 h, 1300 kbit/s, cheapest size $4/month, $0.00595/h, 500 GiB):
  one copy      = 1300 * 1000 / 8 * 7200          = 1,170,000,000 bytes
  total         = (10 + 1) * 1.17e9               = 12.87e9 bytes
  outbound      = 10 * 1.17e9                     = 11.7e9 bytes per session
  uplink 20 Mbit/s / 1.3 Mbit/s = 15.38           -> 15 viewers
  session       = 7200 s * $0.00595 / 3600        = $0.0119 (billed per second)
  month (4x)    = 8 hours * $0.00595              = $0.0476
  transfer      = 4 * 11.7e9 / 2^30               = 43.5859 GiB
  allowance     = 500 GiB * 8 / 672               = 5.9524 GiB
  overage       = 43.5859 - 5.9524 = 37.6335 GiB  -> $0.3763
"""
from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest

from app.cloud.estimate import estimate
from app.config import PROJECT_DIR, ConfigError, PriceTable, load

PRICES = PriceTable()


def test_worked_example_matches_the_hand_computed_figures():
    e = estimate(10, 2, 1300, PRICES, uplink_mbps=20, sessions_per_month=4)
    assert e.size == "s-1vcpu-512mb-10gb"
    assert e.bytes_per_viewer == 1_170_000_000
    assert e.total_bytes == 12_870_000_000
    assert e.outbound_bytes == 11_700_000_000
    assert e.max_viewers_on_uplink == 15
    assert e.billed_seconds == 7200
    assert e.session_usd == pytest.approx(0.0119)
    assert e.month_usd == pytest.approx(0.0476)
    assert e.month_outbound_gib == pytest.approx(43.5859, abs=1e-4)
    assert e.allowance_gib == pytest.approx(5.9524, abs=1e-4)
    assert e.allowance_exceeded
    assert e.overage_gib == pytest.approx(37.6335, abs=1e-4)
    assert e.overage_usd == pytest.approx(0.3763, abs=1e-4)


def test_small_stream_stays_inside_the_allowance():
    # 1 viewer, 1 h at 1000 kbit/s: 0.45e9 bytes; 4 sessions = 1.6764 GiB of 500*4/672 = 2.9762
    e = estimate(1, 1, 1000, PRICES, sessions_per_month=4)
    assert e.month_outbound_gib == pytest.approx(1.6764, abs=1e-4)
    assert e.allowance_gib == pytest.approx(2.9762, abs=1e-4)
    assert not e.allowance_exceeded and e.overage_usd == 0


def test_billed_per_second_with_a_minimum_of_60_s_or_a_cent():
    """Since 1 January 2026: 2.5 h on the cheapest size is $0.0149, not 3 started hours."""
    assert estimate(5, 2.5, 1000, PRICES).session_usd == pytest.approx(0.0148750)
    assert estimate(5, 2.5, 1000, PRICES).billed_seconds == 9000
    assert estimate(5, 0.25, 1000, PRICES).session_usd == 0.01  # the $0.01 minimum
    assert estimate(5, 10 / 3600, 1000, PRICES).billed_seconds == 60  # the 60 s minimum
    assert estimate(5, 3.0, 1000, PRICES, size="s-2vcpu-4gb").session_usd == \
        pytest.approx(3 * 0.03571)


def test_month_is_capped_at_the_monthly_price_and_full_allowance():
    # 30 sessions of 24 h = 720 h > 672 h: pay $6 at most; allowance 1000 GiB at most
    e = estimate(0, 24, 1000, PRICES, size="s-1vcpu-1gb", sessions_per_month=30)
    assert e.month_hours == 720
    assert e.month_usd == 6.0
    assert e.allowance_gib == 1000.0


def test_uplink_division_rounds_down_exactly():
    assert estimate(1, 1, 1300, PRICES, uplink_mbps=2.6).max_viewers_on_uplink == 2
    assert estimate(1, 1, 1300, PRICES, uplink_mbps=2.59).max_viewers_on_uplink == 1
    assert estimate(1, 1, 1300, PRICES).max_viewers_on_uplink is None


def test_unknown_size_lists_the_known_ones():
    with pytest.raises(ConfigError, match="s-1vcpu-1gb"):
        estimate(1, 1, 1000, PRICES, size="m-64vcpu")


@pytest.mark.parametrize("args", [(-1, 1, 1000), (1, 0, 1000), (1, 1, 0)])
def test_nonsense_numbers_are_refused(args):
    with pytest.raises(ValueError):
        estimate(*args, PRICES)


def test_config_file_holds_the_same_table_with_a_check_date():
    prices = load(PROJECT_DIR / "config.toml").cloud.prices
    assert prices == PRICES
    assert date.fromisoformat(prices.checked) <= date.today()
    assert prices.source.startswith("https://")


def test_price_table_comes_from_config(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[cloud.prices]\nchecked = "2030-01-01"\n[cloud.prices.sizes]\n'
                   '"tiny" = { usd_per_month = 2, usd_per_hour = 0.003, transfer_gib = 100 }\n')
    prices = load(cfg).cloud.prices
    e = estimate(2, 4, 1000, prices)  # 4 h: above the $0.01 minimum charge
    assert e.size == "tiny" and e.session_usd == pytest.approx(0.012)
    cfg.write_text('[cloud.prices.sizes]\n"tiny" = { usd_per_month = 2 }\n')
    with pytest.raises(ConfigError, match="missing usd_per_hour, transfer_gib"):
        load(cfg)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "app.cli", "estimate", *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_prints_the_figures():
    result = run_cli("--viewers", "10", "--hours", "2", "--bitrate", "1300", "--uplink", "20")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "12.87 GB" in out and "(10 + 1) x one copy" in out
    assert "at most 15 viewers" in out
    assert "$0.0119" in out and "$0.05 for 8 droplet-hours" in out
    assert "EXCEEDED by 37.63 GiB" in out and "$0.38 extra" in out
    assert "prices checked 2025-04-22" in out
    assert "7200 s billed per second" in out and "at least 60 s or $0.01" in out


def test_cli_rejects_bad_numbers_clearly():
    result = run_cli("--viewers", "10", "--hours", "0", "--bitrate", "1300")
    assert result.returncode == 2 and "hours" in result.stderr
    result = run_cli("--viewers", "10", "--hours", "1", "--bitrate", "1300", "--size", "huge")
    assert result.returncode == 2 and "no price for droplet size 'huge'" in result.stderr
