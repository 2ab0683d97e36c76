"""Safety: PII detection (Presidio, offline), toxicity scoring, an offensive-word list and length limits, applied to
prompts before generation and to replies while they stream; plus a scan of any text or file.

Public API (heavy dependencies — Presidio, spaCy, scikit-learn, torch — load only when a check first runs):

- :class:`SafetyPolicyConfig`, :func:`load_policy`, :func:`save_policy`, :func:`parse_policy_yaml`
- :class:`SafetyFilter` (``check_input``, ``output_guard``, ``check_output``), :class:`OutputGuard`,
  :class:`GuardDecision`, :class:`SafetyResult`, :class:`Finding`
- :func:`scan_text`, :func:`scan_file`, :class:`ScanResult`
- :func:`active_scorer`
"""

from studio.safety.filter import GuardDecision, OutputGuard, SafetyFilter, approx_token_count
from studio.safety.findings import Finding, SafetyResult
from studio.safety.policy import (
    DEFAULT_POLICY_PATH,
    SUPPORTED_PII_ENTITIES,
    SafetyPolicyConfig,
    load_policy,
    parse_policy_yaml,
    policy_from_dict,
    save_policy,
)
from studio.safety.scan import ScanFinding, ScanResult, scan_file, scan_text
from studio.safety.toxicity import active_scorer

__all__ = [
    "DEFAULT_POLICY_PATH",
    "SUPPORTED_PII_ENTITIES",
    "Finding",
    "GuardDecision",
    "OutputGuard",
    "SafetyFilter",
    "SafetyPolicyConfig",
    "SafetyResult",
    "ScanFinding",
    "ScanResult",
    "active_scorer",
    "approx_token_count",
    "load_policy",
    "parse_policy_yaml",
    "policy_from_dict",
    "save_policy",
    "scan_file",
    "scan_text",
]
