"""Example Python metric plugin: copy it to STUDIO_HOME/plugins/ and use the metric `polite`."""


def polite(sample):
    """1 when the reply says please or thank you."""
    text = sample.output.lower()
    return float("please" in text or "thank" in text)


def register(registry):
    registry.add("polite", polite, "Says please or thank you", higher_is_better=True)
