"""All-time flows are the sum of the months: the same as one window from the first event to the as-of minute."""

from __future__ import annotations

from decimal import Decimal

from schemas.events import EVENT_ADAPTER
from stream.core.acquisition import acquisition_window
from stream.core.alltime import MOVEMENT_KINDS, all_time
from stream.core.funnel import funnel_window
from stream.core.ledger import Ledger
from stream.core.policy import Policy
from stream.core.revenue import revenue_window
from stream.core.totals import BEGINNING_MS
from stream.core.windows import MINUTE_MS, Span, floor_minute
from stream.simulation import generate_count
from tests.test_metrics import snapshot_of

POLICY = Policy(fx_rates={"EUR": Decimal("1.08")})


def test_the_months_add_up_to_one_window_over_the_whole_history() -> None:
    events = [EVENT_ADAPTER.validate_python(e) for e in generate_count(4_000, seed=3, incident=True)]
    snapshot = snapshot_of(events, POLICY)
    assert len(snapshot.months) >= 2
    total = all_time(snapshot.months.values())
    assert total is not None

    ledger = Ledger(POLICY)
    ledger.fold_all(events)
    assert ledger.watermark_ms is not None
    everything = Span(BEGINNING_MS, floor_minute(ledger.watermark_ms) + MINUTE_MS)
    funnel = funnel_window(ledger.totals(), everything, POLICY)
    acquisition = acquisition_window(ledger.totals(), everything, POLICY)
    movements = revenue_window(ledger.totals(), everything).movements

    assert {stage: total.stage_entries[None, stage] for stage in funnel.stages} == {
        stage: flow.entries for stage, flow in funnel.stages.items()
    }
    for channel, channel_funnel in funnel.by_channel.items():
        assert total.opportunities_won[channel] == channel_funnel.opportunities_won
        assert total.won_amount[channel] == channel_funnel.won_amount
    assert total.new_leads[None] == acquisition.new_leads
    assert total.new_customers[None] == acquisition.new_customers
    assert total.spend[None, "marketing"] == acquisition.marketing_spend
    assert dict(total.form_fills) == {k: v for k, v in funnel.form_fills_by_type.items() if v}
    for kind, amount_field, accounts_field in MOVEMENT_KINDS:
        assert total.movement_amount[kind] == getattr(movements, amount_field)
        assert total.movement_accounts[kind] == getattr(movements, accounts_field)


def test_no_months_no_counters() -> None:
    assert all_time([]) is None
