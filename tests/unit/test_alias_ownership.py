"""Aliases of a team (issue 19): a new alias belongs to the signed-in user (``owner:`` in its YAML); the team uses it
read-only; only its owner or an admin edits, renames or deletes it; a private one is invisible to everyone else.
A real alias folder, acting as each user through ``studio.users.acting.acting_as``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore
from studio.auth import Principal
from studio.errors import ForbiddenError, NotFoundError
from studio.users.acting import acting_as

BOB = Principal("bob", "session", role="member", user_id="u-bob")
CY = Principal("cy", "session", role="member", user_id="u-cy")
ADA = Principal("ada", "session", role="admin", user_id="u-ada")


def _cfg(name: str, **fields: object) -> AliasConfig:
    return AliasConfig.model_validate({"alias": name, "repo": "HuggingFaceTB/SmolLM2-135M-Instruct", **fields})


def test_aliases_belong_to_their_maker(tmp_path: Path) -> None:
    store = AliasStore(tmp_path / "aliases")
    with acting_as(BOB):
        path = store.save(_cfg("bob:chat", request_params={"temperature": 0.2}))
    assert yaml.safe_load(path.read_text())["owner"] == "bob"
    with acting_as(CY):
        assert store.require("bob:chat").owner == "bob"  # the team sees and uses it
        with pytest.raises(ForbiddenError, match="belongs to bob"):
            store.save(_cfg("bob:chat", request_params={"temperature": 0.9}), replace="bob:chat")
        with pytest.raises(ForbiddenError):
            store.delete("bob:chat")
        with pytest.raises(ForbiddenError):
            store.set_private("bob:chat", True)
        store.save(_cfg("bob:chat-copy"))  # a copy is cy's own
        assert store.require("bob:chat-copy").owner == "cy"
    with acting_as(BOB):  # the owner edits it; the owner field cannot be taken over by the form
        store.save(_cfg("bob:chat", owner="cy", request_params={"temperature": 0.5}), replace="bob:chat")
        assert store.require("bob:chat").owner == "bob"
        store.set_private("bob:chat", True)
        edited = _cfg("bob:chat", request_params={"temperature": 0.4})  # a form without the privacy field
        store.save(edited, replace="bob:chat")
        assert store.require("bob:chat").private  # kept
    with acting_as(CY):
        assert "bob:chat" not in {a.alias for a in store.load_all()[0]}
        with pytest.raises(NotFoundError):
            store.require("bob:chat")
    with acting_as(ADA):  # admins see and change everything
        assert store.require("bob:chat").private
        store.delete("bob:chat")
    assert store.get("bob:chat") is None
    # the single user / the CLI: everything, as before users existed
    assert {a.alias for a in store.load_all()[0]} == {"bob:chat-copy"}
