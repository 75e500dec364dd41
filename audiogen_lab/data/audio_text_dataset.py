"""Audio with captions: `AudioDataset` items plus `text`, one caption per item from the sidecar.

A sidecar's `description` may be one caption or a list of captions; each item picks one from
`(seed, epoch, index)` (fixed across epochs when the split is not shuffled). Files without a sidecar
are left out at construction; a sidecar without a description or that cannot be read makes its file
skipped like an unreadable one (warned, named, counted against `max_failure_ratio`).
"""
import logging
import typing as tp

from .audio import AudioReadError
from .audio_dataset import AudioDataset, AudioMeta
from .info_dataset import read_captions

logger = logging.getLogger(__name__)


class AudioTextDataset(AudioDataset):
    """`AudioDataset` whose items also hold `text` (str); batches get `text` (list[str]).

    Takes the arguments of `AudioDataset`.
    """

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

    def _load(self, meta: AudioMeta, seek_time: float, index: int) -> tp.Dict[str, tp.Any]:
        assert meta.info_path is not None
        captions, _ = read_captions(meta.info_path)  # AudioReadError: skipped like an unreadable file
        if not captions:
            raise AudioReadError(meta.info_path, "the caption sidecar has no 'description'.")
        item = super()._load(meta, seek_time, index)
        item['text'] = self.choose_caption(captions, index)
        return item
