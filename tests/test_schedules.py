import pytest

from spectra.schedules import as_schedule, at, every, logspaced


def test_every_includes_zero_and_multiples():
    s = every(5)
    assert [t for t in range(21) if s(t)] == [0, 5, 10, 15, 20]
    s = every(3, start=2)
    assert [t for t in range(10) if s(t)] == [2, 5, 8]


def test_at_and_combinations():
    s = at([0, 1, 10])
    assert [t for t in range(12) if s(t)] == [0, 1, 10]
    both = every(2) & at([2, 3, 4])
    either = every(5) | at([1])
    assert [t for t in range(8) if both(t)] == [2, 4]
    assert [t for t in range(8) if either(t)] == [0, 1, 5]


def test_logspaced_is_increasing_and_bounded():
    s = logspaced(1, 1000, 7)
    steps = [t for t in range(1001) if s(t)]
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    assert 100 in steps and 10 in steps


def test_as_schedule_coercions():
    assert as_schedule(None) is None
    assert as_schedule(4)(8) and not as_schedule(4)(6)
    assert as_schedule([3])(3) and not as_schedule([3])(4)
    assert as_schedule(lambda t: t == 7)(7)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_every_rejects_bad_n(bad):
    with pytest.raises(ValueError, match="positive integer"):
        every(bad)


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        at([1, -2])
    with pytest.raises(ValueError, match="start <= stop"):
        logspaced(10, 5, 3)
    with pytest.raises(TypeError, match="bool"):
        as_schedule(True)
    with pytest.raises(TypeError, match="schedule"):
        as_schedule(object())
