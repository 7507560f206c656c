"""Regenerate the bundled sample: python examples/make_sample.py (from the repository root)."""

import json
from pathlib import Path

from PIL import Image

from worker.synth import make_manifest, make_photo

HERE = Path(__file__).parent / "sample"


def main() -> None:
    manifest = make_manifest(4, width=480, height=240, seed=2024, objects=25, stuff_vertices=60)
    for image in manifest["images"]:
        image["name"] = image["name"][:-4] + ".jpg"
        path = HERE / "images" / image["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        photo = make_photo(image["id"], image["width"], image["height"])
        Image.fromarray(photo).save(path, quality=80)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
