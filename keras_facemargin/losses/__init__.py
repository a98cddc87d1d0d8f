"""keras_facemargin.losses"""
