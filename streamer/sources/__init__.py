"""Where frames come from: network cameras (RTSP). Files are read by streamer.offline."""
