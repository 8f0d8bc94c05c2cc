"""Masking of buyer data below admin: phone to its last 4 digits, address to its district, name to one character."""

from __future__ import annotations

import pytest

from metrics.pii import HIDDEN, mask_address, mask_name, mask_phone, masked
from sentinel.auth import User


@pytest.mark.parametrize(
    ("phone", "shown"),
    [
        ("13812345678", "*******5678"),
        ("+86 138-1234-5678", "*******5678"),
        ("138****0000", "*******0000"),  # already masked by the platform (JD)
        ("~XGlu1c0ZbQwKKeazs3k3~", HIDDEN),  # platform ciphertext: nothing of it
        ("12", HIDDEN),
        ("", ""),
        (None, None),
    ],
)
def test_mask_phone(phone, shown):
    assert mask_phone(phone) == shown


@pytest.mark.parametrize(
    ("address", "district", "shown"),
    [
        ("浙江省杭州市西湖区文三路90号", None, "浙江省杭州市西湖区****"),
        ("北京市朝阳区建国路1号", None, "北京市朝阳区****"),
        ("四川省阿坝州九寨沟县漳扎镇", None, "四川省阿坝州九寨沟县****"),
        ("~54D12jWhVvZBTvkujr37YQv~", "西湖区", "西湖区****"),
        ("~54D12jWhVvZBTvkujr37YQv~", None, HIDDEN),
        ("某地某路", None, HIDDEN),
    ],
)
def test_mask_address(address, district, shown):
    assert mask_address(address, district) == shown


def test_mask_name_and_roles():
    assert mask_name("张三丰") == "张**" and mask_name("~enc~") == HIDDEN
    pii = {
        "buyer_name": "张三丰",
        "phone": "13812345678",
        "address": "浙江省杭州市西湖区文三路90号",
        "district": None,
    }
    assert masked(pii, User("a", "admin")) == pii
    for user in (User("o", "operator"), User("v", "viewer"), None):
        shown = masked(pii, user)
        assert (
            shown["phone"] == "*******5678" and "13812345678" not in str(shown) and "文三路" not in str(shown)
        )
