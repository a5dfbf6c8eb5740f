"""Where hidden frames go besides WebRTC: the anonymized restream of a camera to an RTSP or RTMP server."""
