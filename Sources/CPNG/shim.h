// libpng's simplified API (png_image_*: no setjmp/longjmp, errors come back in image.message) and
// zlib (compress2, crc32) for the animated PNG chunks libpng does not write.
#include <png.h>
#include <zlib.h>

// PNG_IMAGE_SIZE / PNG_IMAGE_ROW_STRIDE are macros over a struct; Swift cannot import them.
static inline size_t gridit_png_image_size(const png_image *image) { return PNG_IMAGE_SIZE(*image); }
static inline int gridit_png_image_version(void) { return PNG_IMAGE_VERSION; }
static inline unsigned gridit_png_format_gray(void) { return PNG_FORMAT_GRAY; }
static inline unsigned gridit_png_format_rgb(void) { return PNG_FORMAT_RGB; }
static inline unsigned gridit_png_format_rgba(void) { return PNG_FORMAT_RGBA; }
static inline unsigned gridit_png_format_flag_color(void) { return PNG_FORMAT_FLAG_COLOR; }
static inline unsigned gridit_png_format_flag_alpha(void) { return PNG_FORMAT_FLAG_ALPHA; }
