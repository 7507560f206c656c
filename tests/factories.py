"""Small manifest pieces for tests, built in code: override what a case is about."""


def manifest(**overrides):
    base = {
        "version": 1,
        "labels": [{"name": "car", "color": "#00008e"}, {"name": "road", "color": "#804080"}],
        "images": [image()],
        "shapes": [shape()],
    }
    base.update(overrides)
    return base


def shape(**overrides):
    value = {"image": 1, "label": "car", "type": "polygon", "points": [1, 1, 20, 1, 10, 9]}
    value.update(overrides)
    return value


def image(**overrides):
    value = {"id": 1, "name": "lindau/a.png", "width": 64, "height": 32}
    value.update(overrides)
    return value
