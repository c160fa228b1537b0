"""The networks: MTCNN (detection + landmarks) and InceptionResnetV1 (the FaceNet embedding)."""
