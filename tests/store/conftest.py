"""Let pytest rewrite asserts in the shared conformance suite (it is not a test_ module)."""

import pytest

pytest.register_assert_rewrite("store_conformance")
