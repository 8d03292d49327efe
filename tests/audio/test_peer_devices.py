"""Speech through two real peers and real sound devices, end to end.

The private PulseAudio server (see :mod:`.pulse`) stands in for two machines' sound
cards: the null sink ``mic`` is the host's microphone (the host peer captures its
monitor) and the null sink ``speaker`` is the listener's speakers (the listener's
playback plays into it).  The test speaks a committed espeak-ng sample into ``mic``
and records ``speaker``'s monitor at the same time, so the audio goes through
PortAudio and the ALSA pulse plugin, Opus, UDP, the jitter buffer and the mixer, and
out through PortAudio again.  What was recorded must match what was spoken.

The peers run with the defaults ``mitalk`` uses; only the test's own player writes a
few frames ahead of its recorder (as in :mod:`.test_devices`), so that it never runs
dry itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import trio

from mitalk_p2p.audio.devices import open_device_input, open_device_output
from mitalk_p2p.audio.mixer import pcm_to_samples
from mitalk_p2p.audio.playout import Playback
from mitalk_p2p.audio.sources import SAMPLE_RATE, WavSource
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.live_demo import DATA
from mitalk_p2p.runtime.peer_runtime import (
    HostRoom,
    JoinRoom,
    PeerConfig,
    RunningPeer,
    open_peer,
)

from .pulse import PulseServer

Signal = npt.NDArray[np.float64]

FRAME: Final = 960
SPEECH: Final = DATA / "speech-host.wav"
SPEECH_FRAMES: Final = 240
"""Frames of the sample spoken (4.8 s): "Welcome to the mitalk demo room. Every word
you hear travelled from peer to peer ..."."""
TAIL_FRAMES: Final = 50
"""Frames recorded after the speech, so the end-to-end delay fits in the recording."""
LEAD_FRAMES: Final = 6
"""Frames the test's player writes before its recorder delivers the first one."""
SECTION: Final = (2.6, 4.7)
"""The stretch of the sample compared, in seconds: speech without a pause (the only
DTX pause in it is at 2.16-2.32 s), starting well after the talk spurt does."""
SPEECH_RMS: Final = 300.0
"""Every 200 ms of the section is louder than this (about -40 dBFS): speech is present."""
MIN_CORRELATION: Final = 0.9
BOUND: Final = 10.0
"""Seconds a condition may take before the test fails: far above normal."""


def _signal(frames: Sequence[bytes]) -> Signal:
    return np.array(pcm_to_samples(b"".join(frames)), dtype=np.float64)


def _aligned_correlation(reference: Signal, recording: Signal) -> tuple[int, float]:
    """Where ``reference`` sits in ``recording`` (the peak of their FFT
    cross-correlation), and their normalized cross-correlation there."""
    size = 1 << (len(reference) + len(recording)).bit_length()
    spectrum = np.fft.rfft(recording, size) * np.conj(np.fft.rfft(reference, size))
    cross = np.fft.irfft(spectrum, size)[: len(recording) - len(reference) + 1]
    start = int(np.argmax(cross))
    heard = recording[start : start + len(reference)]
    norm = float(np.sqrt(np.dot(reference, reference) * np.dot(heard, heard)))
    return start, float(np.dot(reference, heard)) / norm if norm else 0.0


def _quietest_rms(signal: Signal, window: int) -> float:
    """The RMS level of the quietest whole ``window`` of ``signal``."""
    blocks = signal[: len(signal) // window * window].reshape(-1, window)
    return float(np.sqrt(np.mean(blocks**2, axis=1)).min())


async def _until(peer: RunningPeer, condition: Callable[[], bool]) -> None:
    with trio.fail_after(BOUND):
        await peer.wait_for(condition)


async def _speak_and_record(pulse: PulseServer) -> tuple[list[bytes], list[bytes]]:
    """Play ``SPEECH_FRAMES`` of the sample into ``mic`` while recording ``speaker``'s
    monitor.  Each recorded frame lets one more frame be played, so the device clock
    paces the player."""
    speech = WavSource.open(SPEECH, FRAME)
    sent: list[bytes] = []
    heard: list[bytes] = []
    async with (
        open_device_input(pulse.monitor_device("speaker")) as recorder,
        open_device_output(pulse.playback_device("mic")) as voice,
    ):

        def speak() -> None:
            if len(sent) < SPEECH_FRAMES:
                frame = speech.read_frame()
                assert frame is not None
                sent.append(frame)
                voice.write_frame(frame)

        for _ in range(LEAD_FRAMES):
            speak()
        with trio.fail_after(BOUND):
            while len(heard) < SPEECH_FRAMES + TAIL_FRAMES:
                frame = await recorder.read_frame()
                assert frame is not None
                heard.append(frame)
                speak()
        # The reference is only what was spoken if the player never ran dry.
        assert voice.statistics().underruns == 0, voice.statistics()
        assert recorder.statistics().frames_dropped == 0, recorder.statistics()
    return sent, heard


async def test_speech_into_the_hosts_microphone_plays_on_the_listeners_speakers(
    pulse_server: PulseServer,
) -> None:
    async with (
        open_device_input(pulse_server.monitor_device("mic")) as host_mic,
        open_device_output(pulse_server.playback_device("speaker")) as listener_speakers,
        open_peer(
            PeerConfig(Identity.generate("Host"), HostRoom("Devices"), audio_input=host_mic)
        ) as host,
    ):
        playback = Playback(listener_speakers)
        config = PeerConfig(
            Identity.generate("Listener"),
            JoinRoom(host.invite()),
            playback=playback,
        )
        async with open_peer(config) as listener:
            # Speak once the join's work is over (the tree has placed the listener below
            # the host): that work delays frames the host captures meanwhile past their
            # slot in the listener's jitter buffer (20 ms deep here), each a 20 ms gap.
            await _until(listener, lambda: listener.statistics().peer.media.parent == host.me)
            sent, heard = await _speak_and_record(pulse_server)
            jitter = listener.statistics().peer.media.speakers[host.me]
            played = playback.statistics().overall
    assert listener_speakers.statistics().frames_dropped == 0, listener_speakers.statistics()
    assert played.decode_errors == 0, played
    assert played.frames_played >= SPEECH_FRAMES - 10, played

    spoken, recorded = _signal(sent), _signal(heard)
    first, last = (round(seconds * SAMPLE_RATE) for seconds in SECTION)
    reference = spoken[first:last]
    assert len(reference) >= 2 * SAMPLE_RATE
    assert _quietest_rms(reference, SAMPLE_RATE // 5) > SPEECH_RMS
    start, correlation = _aligned_correlation(reference, recorded)
    delay_ms = 1000 * (start - first) / SAMPLE_RATE
    assert correlation >= MIN_CORRELATION, (correlation, f"{delay_ms:.0f} ms", jitter)
    # The delay from the player to the recorder, through both peers, is plausible.
    assert 0 < delay_ms < 1000, (delay_ms, correlation)
