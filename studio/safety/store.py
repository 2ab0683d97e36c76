"""Where safety policies and their word lists live, and which paths a user may name for them.

Every policy reference that arrives from the Safety tab, the Gradio API, an alias (``safety_policy``), an audit
config or the CLI goes through :class:`PolicyStore`:

- a **name** (``strict`` or ``strict.yaml``, no ``/``): ``$STUDIO_HOME/safety/strict.yaml``; reading ``default``
  falls back to the shipped ``configs/safety/default.yaml`` until a policy of that name is saved;
- a **path** (it has a ``/``): absolute, or relative to STUDIO_HOME (reading also tries the project folder, for
  ``configs/safety/...``); read only from ``$STUDIO_HOME/safety/`` and the shipped ``configs/safety/``, written
  only to ``$STUDIO_HOME/safety/`` and only as ``.yaml`` / ``.yml``;
- nothing: the studio's own policy, ``$STUDIO_HOME/safety/policy.yaml`` (created from the shipped default, with
  its own copy of the word list so that editing the list never writes into ``configs/``).

A policy's own paths are checked when it is saved and again whenever a filter is built from it
(:meth:`PolicyStore.resolved`): ``word_list.file`` is a ``.txt`` read from ``$STUDIO_HOME/safety/`` or ``configs/``
(relative: from STUDIO_HOME, else the project folder) and saved only under ``$STUDIO_HOME/safety/``;
``toxicity.detoxify_checkpoint`` lies under the model roots (STUDIO_HOME, STUDIO_MODEL_DIRS, the Hugging Face
cache; relative: from STUDIO_HOME). Nothing here writes into ``configs/`` or ``$STUDIO_HOME/plugins/``, and
messages name files as ``$STUDIO_HOME/...`` or ``configs/...``, never by a path outside those folders.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from studio.errors import ForbiddenError, ValidationError
from studio.files import write_text_atomic
from studio.paths import (
    check_user_path_text,
    confine,
    confine_write,
    describe_roots,
    display_path,
    find_user_path,
    is_under,
    model_roots,
)
from studio.safety.policy import (
    DEFAULT_POLICY_PATH,
    PROJECT_DIR,
    SAFETY_CONFIG_DIR,
    SafetyPolicyConfig,
    dump_policy_yaml,
    parse_policy_yaml,
)
from studio.safety.toxicity import load_detoxify_scorer
from studio.safety.words import read_word_list_text, save_word_list_text
from studio.settings import CONFIG_DIR, Settings

log = logging.getLogger(__name__)

SAFETY_DIR = "safety"
STUDIO_POLICY_NAME = "policy"
POLICY_SUFFIXES = (".yaml", ".yml")
WORD_LIST_SUFFIXES = (".txt",)
SHIPPED_POLICIES = ("default",)
SHIPPED_WORD_LIST = SAFETY_CONFIG_DIR / "offensive_words.txt"
#: where the studio's policy keeps its editable copy of the shipped word list (relative to STUDIO_HOME)
STUDIO_WORD_LIST = f"{SAFETY_DIR}/{SHIPPED_WORD_LIST.name}"
POLICY_PARAM = "policy"
WORDS_PARAM = "word_list.file"
CHECKPOINT_PARAM = "toxicity.detoxify_checkpoint"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")


class PolicyStore:
    """Safety policy files of one studio (``STUDIO_HOME/safety``) and the shipped ones (``configs/safety``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def folder(self) -> Path:
        """``STUDIO_HOME/safety``: the only folder policies and word lists are saved to."""
        return self.settings.home / SAFETY_DIR

    @property
    def studio_policy_path(self) -> Path:
        """The studio's own policy, which generations are filtered with when no alias names another."""
        return self.folder / f"{STUDIO_POLICY_NAME}.yaml"

    def display(self, path: Path) -> str:
        """A policy or word-list path for people: ``$STUDIO_HOME/safety/x.yaml`` or ``configs/safety/x.yaml``."""
        if is_under(path, CONFIG_DIR):
            return str(path.relative_to(PROJECT_DIR))
        return display_path(path, self.settings)

    # -- policy files --------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Policy names for a picker: the studio's policy, the others saved in ``STUDIO_HOME/safety`` and the
        shipped ones."""
        saved: list[str] = []
        if self.folder.is_dir():
            saved = sorted(
                p.stem
                for p in self.folder.iterdir()
                if p.suffix in POLICY_SUFFIXES and p.is_file() and _NAME_RE.match(p.stem)
            )
        out = [STUDIO_POLICY_NAME, *saved, *SHIPPED_POLICIES]
        return list(dict.fromkeys(out))

    @staticmethod
    def _file_name(ref: str) -> str | None:
        """``strict`` → ``strict.yaml``; None when ``ref`` is a path rather than a name."""
        if "/" in ref or "\\" in ref or not _NAME_RE.match(ref):
            return None
        return ref if ref.lower().endswith(POLICY_SUFFIXES) else f"{ref}.yaml"

    def read_path(self, ref: str | None = None) -> Path:
        """The policy file ``ref`` names (see the module docstring); refused outside the policy folders."""
        if ref is None or not ref.strip():
            return self.studio_policy_path if self.studio_policy_path.is_file() else DEFAULT_POLICY_PATH
        text = check_user_path_text(ref, param=POLICY_PARAM)
        name = self._file_name(text)
        if name is not None:
            mine = self.folder / name
            if mine.is_file():
                return mine
            shipped = SAFETY_CONFIG_DIR / name
            if Path(name).stem in SHIPPED_POLICIES and shipped.is_file():
                return shipped
            if Path(name).stem == STUDIO_POLICY_NAME:
                return DEFAULT_POLICY_PATH
            raise ValidationError(
                f"no safety policy named '{text}'; known: {', '.join(self.names())} "
                f"(a new name is created when you save it)",
                param=POLICY_PARAM,
            )
        roots = [self.folder, SAFETY_CONFIG_DIR]
        return find_user_path(
            text,
            roots,
            param=POLICY_PARAM,
            bases=[self.settings.home, PROJECT_DIR],
            where=describe_roots(roots, self.settings),
            suffixes=POLICY_SUFFIXES,
        )

    def write_path(self, ref: str | None = None) -> Path:
        """Where saving ``ref`` writes: always under ``STUDIO_HOME/safety`` with a ``.yaml``/``.yml`` name."""
        if ref is None or not ref.strip():
            return self.studio_policy_path
        text = check_user_path_text(ref, param=POLICY_PARAM)
        name = self._file_name(text)
        if name is not None:
            return self.folder / name
        return confine_write(
            text,
            self.folder,
            param=POLICY_PARAM,
            suffixes=POLICY_SUFFIXES,
            home=self.settings.home,
            base=self.settings.home,
            where=f"{display_path(self.folder, self.settings)}; the shipped configs/safety is read-only",
        )

    def load(self, ref: str | None = None) -> tuple[Path, SafetyPolicyConfig]:
        """The policy file ``ref`` names and its validated content (as written: paths not yet resolved)."""
        path = self.read_path(ref)
        shown = self.display(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValidationError(f"{shown}: no such safety policy file", param=POLICY_PARAM) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{shown}: cannot read it ({type(exc).__name__})", param=POLICY_PARAM) from None
        return path, parse_policy_yaml(text, shown)

    def save(self, policy: SafetyPolicyConfig, ref: str | None = None) -> Path:
        """Write ``policy`` as ``ref`` (atomically) after checking the paths inside it, and that a configured
        Detoxify checkpoint loads (never by unpickling: see :mod:`studio.safety.toxicity`); returns the file."""
        target = self.write_path(ref)
        resolved = self.resolved(policy)
        checkpoint = resolved.toxicity.detoxify_checkpoint
        if resolved.toxicity.enabled and checkpoint and resolved.toxicity.scorer != "profanity-check":
            # refused now, with the reason, rather than saved and silently replaced by the fallback scorer
            load_detoxify_scorer(checkpoint)
        return write_text_atomic(target, dump_policy_yaml(policy))

    # -- paths inside a policy -----------------------------------------------------------------------------
    def word_list_path(self, policy: SafetyPolicyConfig) -> Path:
        """The policy's word list file, confined to ``STUDIO_HOME/safety`` and ``configs/`` (it may not exist
        yet). Only those two folders: the text of a word list is shown back to whoever edits the policy."""
        roots = [self.folder, CONFIG_DIR]
        return find_user_path(
            policy.word_list.file,
            roots,
            param=WORDS_PARAM,
            bases=[self.settings.home, PROJECT_DIR],
            where=describe_roots(roots, self.settings),
            suffixes=WORD_LIST_SUFFIXES,
            must_exist=False,
        )

    def word_list_write_path(self, policy: SafetyPolicyConfig) -> Path:
        """Where saving the policy's word list writes: only a ``.txt`` under ``STUDIO_HOME/safety``."""
        raw = policy.word_list.file
        try:
            return confine_write(
                raw,
                self.folder,
                param=WORDS_PARAM,
                suffixes=WORD_LIST_SUFFIXES,
                home=self.settings.home,
                base=self.settings.home,
                where=display_path(self.folder, self.settings),
            )
        except ForbiddenError as exc:
            if is_under(self.word_list_path(policy), CONFIG_DIR):
                raise ForbiddenError(
                    f"the word list {raw} is shipped with the studio and read-only; set word_list.file to a file "
                    f"under $STUDIO_HOME/safety (e.g. {STUDIO_WORD_LIST}) and save the policy first",
                    param=WORDS_PARAM,
                ) from None
            raise exc from None

    def checkpoint_path(self, policy: SafetyPolicyConfig) -> Path | None:
        """The Detoxify checkpoint, confined to the model roots (relative: from STUDIO_HOME), or None."""
        raw = policy.toxicity.detoxify_checkpoint
        if not raw:
            return None
        roots = model_roots(self.settings)
        return confine(
            raw, roots, param=CHECKPOINT_PARAM, base=self.settings.home, where=describe_roots(roots, self.settings)
        )

    def resolved(self, policy: SafetyPolicyConfig) -> SafetyPolicyConfig:
        """A copy of ``policy`` whose word list and checkpoint are absolute paths checked against the allowed
        folders (:class:`ForbiddenError` for one outside them): what filters and scorers are built from."""
        words = policy.word_list.model_copy(update={"file": str(self.word_list_path(policy))})
        checkpoint = self.checkpoint_path(policy)
        toxicity = policy.toxicity.model_copy(
            update={"detoxify_checkpoint": str(checkpoint) if checkpoint is not None else None}
        )
        return policy.model_copy(update={"word_list": words, "toxicity": toxicity})

    # -- word lists ----------------------------------------------------------------------------------------
    def word_list_text(self, policy: SafetyPolicyConfig) -> tuple[Path, str]:
        """The policy's word list file and its text ('' when it does not exist yet)."""
        path = self.word_list_path(policy)
        try:
            return path, read_word_list_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(
                f"{self.display(path)}: cannot read the word list ({type(exc).__name__})", param=WORDS_PARAM
            ) from None

    def save_word_list(self, ref: str | None, text: str) -> Path:
        """Write the word list of policy ``ref``; only files under ``STUDIO_HOME/safety`` are ever written."""
        _path, policy = self.load(ref)
        return save_word_list_text(self.word_list_write_path(policy), text)

    # -- the studio's policy -------------------------------------------------------------------------------
    def ensure_studio_policy(self) -> Path:
        """The studio's policy file, created from the shipped default when missing, with its own copy of the
        word list in ``STUDIO_HOME/safety``. A policy created before it had its own copy is switched to one."""
        words = self.settings.home / STUDIO_WORD_LIST
        if not words.is_file():
            write_text_atomic(words, SHIPPED_WORD_LIST.read_text(encoding="utf-8"))
        path = self.studio_policy_path
        shipped_file = SafetyPolicyConfig().word_list.file
        if not path.is_file():
            text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
            write_text_atomic(path, _with_word_list(text, shipped_file, STUDIO_WORD_LIST))
            return path
        try:
            _path, policy = self.load(None)
        except ValidationError:
            return path  # a broken policy is the user's to fix in the editor; never overwritten
        if policy.word_list.file == shipped_file:
            text = path.read_text(encoding="utf-8")
            write_text_atomic(path, _with_word_list(text, shipped_file, STUDIO_WORD_LIST))
            log.info("the studio's safety policy now uses its own word list %s", STUDIO_WORD_LIST)
        return path


def shipped_policy_path(ref: str) -> Path:
    """A shipped policy of ``configs/safety`` by name (``default``) or path, for code that knows no STUDIO_HOME
    (a stored audit's scorecard read from the database alone)."""
    text = check_user_path_text(ref, param=POLICY_PARAM)
    name = PolicyStore._file_name(text)
    if name is not None:
        if Path(name).stem not in SHIPPED_POLICIES:
            raise ValidationError(
                f"no shipped safety policy named '{text}'; shipped: {', '.join(SHIPPED_POLICIES)}", param=POLICY_PARAM
            )
        return SAFETY_CONFIG_DIR / name
    return find_user_path(
        text,
        [SAFETY_CONFIG_DIR],
        param=POLICY_PARAM,
        bases=[PROJECT_DIR],
        where="configs/safety",
        suffixes=POLICY_SUFFIXES,
    )


def _with_word_list(text: str, old: str, new: str) -> str:
    """Policy YAML ``text`` with ``word_list.file`` changed from ``old`` to ``new``, comments kept when the line
    is the usual ``file: old``."""
    changed = re.sub(rf"(?m)^(\s+file:\s*){re.escape(old)}\s*$", rf"\g<1>{new}", text, count=1)
    policy = parse_policy_yaml(changed, "policy")
    if policy.word_list.file == new:
        return changed
    policy = policy.model_copy(update={"word_list": policy.word_list.model_copy(update={"file": new})})
    return dump_policy_yaml(policy)
