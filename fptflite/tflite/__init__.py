"""TFLite export and execution: conversion, op audit, metadata, LiteRT predictor."""
