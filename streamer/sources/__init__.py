"""Where frames come from: network cameras (RTSP). Files are read by streamer.offline (photos) and
streamer.file_pipeline (videos)."""
