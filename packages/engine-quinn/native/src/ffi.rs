//! Raw pointers from the caller become slices here, and only here.

/// # Safety
/// `p` must be null or valid for reads of `len` elements for the duration of the call.
pub unsafe fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if p.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller (koffi) passes a live buffer of `len` elements.
        unsafe { std::slice::from_raw_parts(p, len) }
    }
}

/// # Safety
/// `p` must be null or valid for reads and writes of `len` elements, and not aliased, for the
/// duration of the call.
pub unsafe fn slice_mut<'a, T>(p: *mut T, len: usize) -> &'a mut [T] {
    if p.is_null() || len == 0 {
        &mut []
    } else {
        // SAFETY: as above; koffi hands us the memory of a caller-owned typed array.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }
}

/// Copy `src` into `out` as far as it fits; returns the full length of `src`.
pub fn copy_out(src: &[u8], out: &mut [u8]) -> usize {
    let n = src.len().min(out.len());
    out[..n].copy_from_slice(&src[..n]);
    src.len()
}
