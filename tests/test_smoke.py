import rfjax


def test_version():
    assert rfjax.__version__
