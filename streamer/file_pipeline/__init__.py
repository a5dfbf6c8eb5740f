"""A video file through the same FrameProcessor as live streams, as three stages on their own threads so both cores
work, joined by bounded queues:

    decode.py (demux, decode, turn upright) -> hide.py (detect ahead, track and hide in order) -> encode.py (H.264)

video.py runs them; audio.py copies the audio track alongside, orientation.py applies a phone's rotation metadata.
"""
