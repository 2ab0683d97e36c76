"""Compare A/B and the feedback loop: side-by-side streaming, blind battles, rankings by annotators, the
leaderboard (Bradley–Terry with bootstrap intervals, plus online Elo), annotator agreement, and the export of
votes and rankings into a preference dataset that DPO / reward-model jobs train on."""
