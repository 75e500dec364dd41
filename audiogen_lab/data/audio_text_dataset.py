"""Audio with captions: `AudioDataset` items plus `text`, one caption per item from the sidecar.

A sidecar's `description` may be one caption or a list of captions; each item picks one from
`(seed, epoch, index)` (fixed across epochs when the split is not shuffled). Files without a sidecar
are left out at construction; a sidecar that cannot be read, or has no description (and no attributes to
compose one from, when `caption_from_attributes`), makes its file skipped like an unreadable one (warned,
named, counted against `max_failure_ratio`).

Caption augmentation (shuffled, i.e. training, datasets only): with probability `caption_attribute_prob`
the caption is composed from the sidecar attributes (genre, composer, instrument, key, tempo), each left
out with probability `caption_drop_prob` (see `caption_augment`). The draws depend only on
`(seed, epoch, index)`.
"""
import logging
import random
import typing as tp

from .audio import AudioReadError
from .audio_dataset import AudioDataset, AudioMeta
from .caption_augment import CaptionAugment, present_keys
from .info_dataset import read_captions
from .sampling import CAPTION_SALT, item_seed

logger = logging.getLogger(__name__)


class AudioTextDataset(AudioDataset):
    """`AudioDataset` whose items also hold `text` (str); batches get `text` (list[str]).

    Args:
        caption_attribute_prob: training items: chance of a caption composed from the attributes.
        caption_drop_prob: chance of leaving out each attribute of a composed caption.
        caption_from_attributes: compose the caption from the attributes when the sidecar has no description.
        kwargs: the arguments of `AudioDataset`.
    """

    def __init__(self, *args: tp.Any, caption_attribute_prob: float = 0.0, caption_drop_prob: float = 0.0,
                 caption_from_attributes: bool = False, **kwargs: tp.Any) -> None:
        self.caption_augment = CaptionAugment(attribute_prob=caption_attribute_prob, drop_prob=caption_drop_prob)
        self.caption_from_attributes = caption_from_attributes
        super().__init__(*args, **kwargs)

    def _filter(self, meta: tp.List[AudioMeta], min_duration: tp.Optional[float],
                max_duration: tp.Optional[float]) -> tp.List[AudioMeta]:
        captioned = [m for m in meta if m.info_path is not None]
        if len(captioned) < len(meta):
            missing = [m.path for m in meta if m.info_path is None]
            logger.warning("%s: leaving out %d of %d files that have no caption sidecar, e.g. %s",
                           self._label(), len(missing), len(meta), ', '.join(missing[:5]))
        if not captioned:
            raise ValueError(f"{self._label()}: no file of the manifest has a caption sidecar (`info_path`); "
                             f"write `<audio stem>.json` sidecars and rebuild the manifest.")
        return super()._filter(captioned, min_duration, max_duration)

    def _caption(self, captions: tp.List[str], attributes: tp.Dict[str, tp.Any], index: int) -> tp.Optional[str]:
        augment = self.caption_augment
        composable = bool(present_keys(attributes, augment.keys))
        if not captions and not (self.caption_from_attributes and composable):
            return None
        if not self.shuffle or (not composable) or (captions and augment.attribute_prob == 0):
            return self.choose_caption(captions, index) if captions else \
                augment.choose([], attributes, random.Random(0))
        rng = random.Random(item_seed(self.seed, self.epoch, index, CAPTION_SALT))
        return augment.choose(captions, attributes, rng)

    def _load(self, meta: AudioMeta, seek_time: float, index: int) -> tp.Dict[str, tp.Any]:
        assert meta.info_path is not None
        captions, attributes = read_captions(meta.info_path)  # AudioReadError: skipped like an unreadable file
        text = self._caption(captions, attributes, index)
        if text is None:
            raise AudioReadError(meta.info_path, "the caption sidecar has no 'description'"
                                 + (" and no attribute to compose one from." if self.caption_from_attributes
                                    else "."))
        item = super()._load(meta, seek_time, index)
        item['text'] = text
        if 'info' in item:
            item['info'].description = text
        return item
