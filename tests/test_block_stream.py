"""Stream places: after every block, the place (row, token) where the next block starts, and a stream resumed there
gives the blocks that followed, without the rows before it being tokenized."""

import numpy as np
import pytest

from lit_hf.data.causal_lm_stream import stream_blocks


def token_rows(seed: int) -> list[list[int]]:
    """300 rows of 0 to 40 tokens (a tenth of them empty), token values their position in the whole stream."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 41, 300) * (rng.random(300) > 0.1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return [list(range(start, start + n)) for start, n in zip(starts, lengths, strict=True)]


def batches(rows: list[list[int]], size: int) -> list[list[list[int]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("block_size", [7, 32, 100])
def test_every_place_names_the_next_token_and_resumes_the_rest(packing, block_size):
    rows = token_rows(block_size)
    whole = list(stream_blocks(batches(rows, 9), block_size, packing))
    lengths = np.array([len(row) for row in rows])
    assert len(whole) == lengths.sum() // block_size > 5
    for b, block in enumerate(whole):
        np.testing.assert_array_equal(block["input_ids"], np.arange(b * block_size, (b + 1) * block_size))
        row, token = block["stream_place"].tolist()
        assert flat(block["stream_place"], lengths) == (b + 1) * block_size  # the next block's first token
        assert token < lengths[row] or token == 0
        if b % 13:  # resumed at every 13th place (and all the blocks after it compared): enough of every kind
            continue
        resumed = list(stream_blocks(batches(rows[row:], 5), block_size, packing, start=(row, token)))
        assert len(resumed) == len(whole) - b - 1
        for want, got in zip(whole[b + 1 :], resumed, strict=True):
            for key in ("input_ids", "position_ids") if packing else ("input_ids",):
                np.testing.assert_array_equal(got[key], want[key])
            assert flat(got["stream_place"], lengths) == flat(want["stream_place"], lengths)  # empty rows aside


def flat(place: np.ndarray, lengths: np.ndarray) -> int:
    """A place as the number of stream tokens before it."""
    row, token = place.tolist()
    return int(lengths[:row].sum()) + token


def test_a_place_at_a_row_end_resumes_past_empty_rows():
    """A block ending with its row points at the next row, empty or not; resumed there, the stream goes on."""
    rows = [[0, 1], [], [], [2, 3, 4], [], [5]]
    blocks = list(stream_blocks([rows[:2], rows[2:]], 2, packing=False))
    assert [block["stream_place"].tolist() for block in blocks] == [[2, 0], [3, 2], [6, 0]]  # [2, 0]: a batch's end
    resumed = list(stream_blocks([rows[2:]], 2, packing=False, start=(2, 0)))
    assert [block["input_ids"].tolist() for block in resumed] == [[2, 3], [4, 5]]
