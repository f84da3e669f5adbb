"""The demo report's length verdict (issue #8: say so when the FlexMDM is not closer)."""

from __future__ import annotations

from retrofit.demo.report import length_verdict


def test_verdict_names_the_flexmdm_closest_only_when_it_beats_both() -> None:
    won = length_verdict({"base MDM": 125.9, "MDM fine-tune": 116.5, "FlexMDM": 40.25})
    assert (
        won
        == "Length: the FlexMDM is closest to the data's lengths (W1 40.2 tokens vs base MDM 125.9, MDM fine-tune 116.5)."
    )
    lost = length_verdict({"base MDM": 125.9, "MDM fine-tune": 116.5, "FlexMDM": 120.0})
    assert lost.startswith("Length: the FlexMDM is NOT closer") and "W1 120.0 tokens" in lost


def test_verdict_without_every_result_makes_no_claim() -> None:
    assert "no comparison" in length_verdict({"base MDM": 1.0, "MDM fine-tune": None, "FlexMDM": 0.5})
