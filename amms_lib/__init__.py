"""AMMS-SR: non-local attention, second-order channel attention and multi-scale fusion
for single-image super-resolution, as a thin library behind the notebooks in notebooks/.

Find a component by its file: non_local, second_order, multiscale (the three ideas),
amms (the network), srcnn / vdsr / lapsrn / memnet (comparisons), resize (MATLAB
bicubic), metrics (PSNR/SSIM on Y), data, patches, train, benchmark, upscale.
"""
