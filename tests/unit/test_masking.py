"""Personal data is masked in public feeds: names, ID numbers and phone numbers in free text."""

from __future__ import annotations

import pytest

from events.masking import mask_name, mask_text


@pytest.mark.parametrize(("name", "masked"), [("张三", "张*"), ("欧阳娜娜", "欧***"), ("", ""), (None, None)])
def test_a_name_keeps_only_its_first_character(name: str | None, masked: str | None) -> None:
    assert mask_name(name) == masked


def test_an_id_number_in_free_text_keeps_only_region_and_check_digits() -> None:
    text = "当事人身份证号44011319900101123X，现场检查"
    assert mask_text(text) == "当事人身份证号440113********123X，现场检查"


def test_a_mobile_number_in_free_text_is_masked_in_the_middle() -> None:
    assert mask_text("联系电话13812345678。") == "联系电话138****5678。"


def test_case_numbers_and_amounts_are_left_alone() -> None:
    text = "番综执罚〔2026〕12号 罚款5000元"
    assert mask_text(text) == text
