"""Path confinement: every path that arrives from a user (UI, Gradio API, REST, a job or policy file) is checked
here before the studio reads or writes it.

A user path is accepted only when, after making it absolute and normalising ``..`` away, it lies under one of
the allowed roots for its use:

- reading a model or adapter: ``STUDIO_HOME``, the folders in ``STUDIO_MODEL_DIRS`` and the Hugging Face cache
  (:func:`model_roots`);
- reading a policy, word list or shipped example: ``STUDIO_HOME`` plus the project's ``configs/`` folder;
- writing: one sub-folder of ``STUDIO_HOME`` named by the caller (``safety/``, ``exports/``, ...) and only with
  the file suffixes the caller allows. Nothing a user sends is ever written into ``STUDIO_HOME/plugins/``: the
  plugin folder is filled through the file system only.

The check is lexical on the normalised path (symlinks that an operator placed inside a root are followed, since
only the file system can create them); a path that is not under a root is refused with a
:class:`~studio.errors.ForbiddenError` that names the field and the allowed roots but never says whether the path
exists. ``~`` is never expanded (``~user`` would look up accounts), NUL bytes and over-long paths are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from studio.errors import ForbiddenError, ValidationError
from studio.settings import CONFIG_DIR, Settings

MAX_PATH_CHARS = 1024
#: the longest file or folder name most file systems allow (a longer one cannot exist: refused before any lookup)
MAX_NAME_CHARS = 255
PLUGINS_DIR = "plugins"
FileKind = Literal["file", "dir", "any"]


def _normal(path: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def is_under(path: Path, root: Path) -> bool:
    """``path`` lies in ``root`` (or is it), compared lexically after normalising both, and also after resolving
    symlinks of the root (``/tmp`` vs ``/private/tmp``)."""
    p = _normal(path)
    return any(p == r or p.is_relative_to(r) for r in {_normal(root), _normal(Path(os.path.realpath(root)))})


def _describe(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "none"


def check_user_path_text(text: str | os.PathLike[str], *, param: str) -> str:
    """The raw checks every user path gets before it is interpreted: not empty, no NUL byte, not over-long (the
    whole text, or one name in it), no ``~`` (home-directory expansion is never done for user input)."""
    raw = os.fspath(text)
    if not raw or not raw.strip():
        raise ValidationError(f"'{param}' is empty; give a path", param=param)
    if "\x00" in raw:
        raise ValidationError(f"'{param}' contains a NUL byte", param=param)
    if len(raw) > MAX_PATH_CHARS:
        raise ValidationError(f"'{param}' is longer than {MAX_PATH_CHARS} characters", param=param)
    if any(len(part) > MAX_NAME_CHARS for part in raw.replace("\\", "/").split("/")):
        raise ValidationError(
            f"'{param}': a file or folder name in it is longer than {MAX_NAME_CHARS} characters", param=param
        )
    if raw.strip().startswith("~"):
        raise ValidationError(
            f"'{param}': paths starting with '~' are not accepted; give an absolute path or one relative to "
            "STUDIO_HOME",
            param=param,
        )
    return raw.strip()


def confine(
    path: str | os.PathLike[str],
    roots: Iterable[Path],
    *,
    param: str,
    base: Path | None = None,
    where: str | None = None,
) -> Path:
    """``path`` made absolute (relative paths are taken from ``base``, else the first root) and normalised,
    provided it lies under one of ``roots``; else :class:`ForbiddenError` naming ``param`` and the roots (or
    ``where``, a description of them that reveals nothing outside STUDIO_HOME: see :func:`describe_roots`)."""
    root_list = [Path(r) for r in roots]
    raw = check_user_path_text(path, param=param)
    candidate = Path(raw)
    if not candidate.is_absolute():
        anchor = base if base is not None else (root_list[0] if root_list else Path.cwd())
        candidate = anchor / candidate
    candidate = _normal(candidate)
    if not any(is_under(candidate, r) for r in root_list):
        raise ForbiddenError(
            f"'{param}': '{raw}' is outside the folders the studio may use ({where or _describe(root_list)})",
            param=param,
        )
    return candidate


def confine_write(
    path: str | os.PathLike[str],
    root: Path,
    *,
    param: str,
    suffixes: Sequence[str],
    home: Path | None = None,
    where: str | None = None,
    base: Path | None = None,
) -> Path:
    """A path the studio may write for a user: under ``root`` (relative paths are taken from ``base``, default
    ``root``), with one of ``suffixes`` (lower-case, with the dot), and never inside ``<home>/plugins``."""
    target = confine(path, [root], param=param, base=base or root, where=where)
    if suffixes and target.suffix.lower() not in suffixes:
        raise ValidationError(
            f"'{param}': the file name must end with {' or '.join(suffixes)} (got '{target.name}')", param=param
        )
    if home is not None and is_under(target, home / PLUGINS_DIR):
        raise ForbiddenError(
            f"'{param}': the plugins folder is filled through the file system only, never by the studio",
            param=param,
        )
    return target


def model_roots(settings: Settings) -> list[Path]:
    """Where models and adapters may be read from: STUDIO_HOME, STUDIO_MODEL_DIRS and the Hugging Face cache."""
    return [settings.home, *settings.extra_model_dirs, settings.hf_cache_dir]


def config_roots(settings: Settings) -> list[Path]:
    """Where policies, word lists and example files may be read from: STUDIO_HOME and the shipped ``configs/``."""
    return [settings.home, CONFIG_DIR]


def display_path(path: Path, settings: Settings) -> str:
    """A path for messages: relative to STUDIO_HOME when under it (``$STUDIO_HOME/models/x``), else only its
    name, so that an error never reveals the layout outside the studio's folders."""
    p, home = _normal(path), _normal(settings.home)
    if p == home:
        return "$STUDIO_HOME"
    if p.is_relative_to(home):
        return f"$STUDIO_HOME/{p.relative_to(home)}"
    return path.name or "/"


def describe_root_list(roots: Iterable[Path], settings: Settings) -> list[str]:
    """Each root as messages may name it, without revealing paths outside STUDIO_HOME: ``$STUDIO_HOME/safety``,
    ``configs/safety`` (the shipped files), ``STUDIO_MODEL_DIRS folder 'name'``, ``the Hugging Face cache``."""
    project = _normal(CONFIG_DIR.parent)
    extra = [_normal(p) for p in settings.extra_model_dirs]
    out: list[str] = []
    seen: list[Path] = []
    for root in roots:
        r = _normal(root)
        if any(is_under(r, earlier) for earlier in seen):
            continue  # inside a root already named (the Hugging Face cache inside STUDIO_HOME)
        seen.append(r)
        if is_under(r, settings.home):
            text = display_path(r, settings)
        elif is_under(r, CONFIG_DIR):
            text = str(r.relative_to(project))
        elif r == _normal(settings.hf_cache_dir):
            text = "the Hugging Face cache"
        elif r in extra:
            text = f"STUDIO_MODEL_DIRS folder '{r.name}'"
        else:
            text = f"'{r.name}'"
        if text not in out:
            out.append(text)
    return out


def describe_roots(roots: Iterable[Path], settings: Settings) -> str:
    """:func:`describe_root_list` as one comma-separated phrase (``none`` for no roots)."""
    return ", ".join(describe_root_list(roots, settings)) or "none"


def _exists(path: Path, kind: FileKind) -> bool:
    try:
        if kind == "file":
            return path.is_file()
        if kind == "dir":
            return path.is_dir()
        return path.exists()
    except OSError:  # a name too long for this file system, a permission error: not there for the user
        return False


def find_user_path(
    path: str | os.PathLike[str],
    roots: Iterable[Path],
    *,
    param: str,
    bases: Sequence[Path],
    where: str,
    kind: FileKind = "file",
    suffixes: Sequence[str] = (),
    must_exist: bool = True,
) -> Path:
    """An existing file (or folder, ``kind``) a user names: absolute, or relative to the first of ``bases`` where
    it exists; it must lie under one of ``roots`` (else :class:`ForbiddenError`, without looking at the disk) and
    end with one of ``suffixes`` when given. Not there: :class:`ValidationError` naming the user's text and
    ``where`` (never the absolute paths tried), or with ``must_exist=False`` the first allowed candidate."""
    root_list = [Path(r) for r in roots]
    raw = check_user_path_text(path, param=param)
    given = Path(raw)
    tried = [given] if given.is_absolute() else [b / given for b in bases]
    allowed = [p for p in (_normal(t) for t in tried) if any(is_under(p, r) for r in root_list)]
    if not allowed:
        raise ForbiddenError(f"'{param}': '{raw}' is outside the folders the studio may use ({where})", param=param)
    if suffixes and allowed[0].suffix.lower() not in suffixes:
        raise ValidationError(
            f"'{param}': the file name must end with {' or '.join(suffixes)} (got '{allowed[0].name}')", param=param
        )
    for candidate in allowed:
        if _exists(candidate, kind):
            return candidate
    if not must_exist:
        return allowed[0]
    what = {"file": "file", "dir": "folder", "any": "file or folder"}[kind]
    raise ValidationError(f"'{param}': no {what} '{raw}' in {where}", param=param)
