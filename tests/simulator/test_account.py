"""The simulator's account knows its tokens by lookup (a request is not a scan of every
instance): an instance added, replaced with a new token or removed changes what is known."""

from __future__ import annotations

import pytest

from bridge.simulator.state import MSG_INVALID_TOKEN, Account, ApiError


def test_tokens_follow_instances_added_replaced_and_removed() -> None:
    """A token is known while an instance holds it: re-adding an instance with a new token
    forgets the old one, removing it forgets its token, a token two instances share stays
    known until neither holds it; account tokens are always known."""
    account = Account(account_tokens={"tok-account"})
    account.add("a", "tok-a")
    account.add("b", "tok-shared")
    account.add("c", "tok-shared")
    assert account.known_token("tok-a")
    account.add("a", "tok-a2")
    assert not account.known_token("tok-a")
    assert account.known_token("tok-a2")
    account.remove("b")
    assert account.known_token("tok-shared")
    account.remove("c")
    account.remove("c")  # removing twice changes nothing
    assert not account.known_token("tok-shared")
    assert account.known_token("tok-account")


def test_a_forgotten_token_is_refused() -> None:
    """The token of a removed instance is answered 401 Invalid token, like any unknown one."""
    account = Account()
    account.add("shop", "tok-shop")
    assert account.authorize("tok-shop", "shop").name == "shop"
    account.remove("shop")
    with pytest.raises(ApiError) as caught:
        account.authorize("tok-shop", "shop")
    assert (caught.value.status, caught.value.message) == (401, MSG_INVALID_TOKEN)
